"""How long does `flywheel replay` take on 200 inputs with a 1 s model?

Target: 200 inputs, a model that takes 1 s per answer, ``--concurrency 20``: under 15 s
(10 s is the floor: 200 answers, 20 at a time). Run by hand (not part of pytest)::

    python benchmarks/replay.py                        # 200 inputs, 1 s, concurrency 20; with and without the judge
    python benchmarks/replay.py --inputs 500 --concurrency 50 --repeat 3
    python benchmarks/replay.py --flywheel /other/venv/bin/flywheel

Seeds a fresh SQLite database with N logged `ask` calls as the bot logs them (the shipped
prompt's rendering, every other one in a thread with earlier turns; half corrected, half
approved), starts the test suite's FakeOpenAI in this process, answering each request after
``--model-seconds``, and times the real ``flywheel replay ask --json`` in a subprocess, from
spawn to exit (start-up, reading the inputs, the calls, the rows, the report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bot.prompts import PromptSet  # noqa: E402
from bot.store import CallLog, Store  # noqa: E402

from fakes import FakeOpenAI  # noqa: E402

TURNS = [{"role": "user", "content": "The nightly export job failed again with exit code 137."},
         {"role": "assistant", "content": "Exit code 137 is SIGKILL, almost always the OOM killer."}]


async def seed(url: str, n: int) -> None:
    ask = PromptSet.load(REPO / "prompts").get("ask")
    prompt = {"name": "ask", "version": ask.version, "path": str(ask.path), "source": ask.source, "model": None}
    store = Store(url)
    await store.upgrade()
    today = datetime.now(UTC).date().isoformat()
    try:
        for i in range(n):
            text = f"Question {i}: how do I stop the export job from running out of memory?"
            turns = TURNS if i % 2 else []
            call_id = await store.record_call(CallLog(
                trigger="mention", prompt_name="ask", prompt_version=ask.version, model="gpt-5.4-mini",
                messages=ask.messages(text, turns, user="U0ASKER01", channel="C0GENERAL", date=today),
                answer="Stream the rows in batches instead of loading them all; raise the memory limit last.",
                request_text=text, user_id="U0ASKER01", channel_id="C0GENERAL", finish_reason="stop",
                prompt_tokens=1200, completion_tokens=80, cost_usd=0.0005, latency_ms=1900), prompt=prompt)
            if i % 2:
                await store.add_correction(call_id=call_id, user_id="U0EDITOR1", text="Batch the rows (10k).")
            else:
                await store.set_feedback(call_id=call_id, user_id="U0VOTER01", source="reaction", name="+1",
                                         value=1)
    finally:
        await store.close()


def answer(text: str) -> str:
    if "<answer_a>" in text:
        return "Both are fine; the first is more concrete.\n\nVerdict: A"
    return ("Process the export in batches of 10,000 rows with a server-side cursor, so memory stays flat; "
            "then raise the container's memory limit only if a single batch needs it.")


async def one_run(flywheel: str, url: str, model: FakeOpenAI, args: argparse.Namespace, judge: bool,
                  folder: Path) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "DATABASE_URL": url,
           "OPENAI_API_KEY": model.api_key, "OPENAI_BASE_URL": model.url, "FLYWHEEL_MODEL": "gpt-5.4-mini",
           "PROMPTS_DIR": str(REPO / "prompts")}
    command = [flywheel, "replay", "ask", "--concurrency", str(args.concurrency), "--json",
               "--report", str(folder / "report.html"), *(["--judge", "judge"] if judge else [])]
    before = len(model.requests)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*command, cwd=folder, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"flywheel replay failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    result = json.loads(out)
    return {"judge": judge, "seconds": round(seconds, 2), "inputs": result["inputs"], "answered": result["answered"],
            "errors": result["errors"], "judged": result["judged"], "model_requests": len(model.requests) - before,
            "latency_p50_ms": result["latency_p50_ms"], "command": " ".join(command[1:])}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--model-seconds", type=float, default=1.0, help="each answer takes this long (default 1)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--no-judge", action="store_true", help="only the run without the judge")
    p.add_argument("--flywheel", default=str(Path(sys.executable).with_name("flywheel")))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-replay-bench-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'flywheel.db'}"
        await seed(url, args.inputs)
        async with FakeOpenAI() as model:
            model.default_reply(answer, first_token_delay=args.model_seconds)
            runs = []
            for _ in range(args.repeat):
                for judge in (False,) if args.no_judge else (False, True):
                    run = await one_run(args.flywheel, url, model, args, judge, folder)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    floor = args.inputs / args.concurrency * args.model_seconds
    print(f"\n{args.inputs} inputs, model {args.model_seconds:g} s, concurrency {args.concurrency} "
          f"(floor {floor:g} s without the judge; target < 15 s for 200/1 s/20)")
    for judge in (False, True):
        times = [r["seconds"] for r in runs if r["judge"] is judge]
        if times:
            print(f"  {'with' if judge else 'without'} the judge: {', '.join(f'{t:.2f} s' for t in times)}")


if __name__ == "__main__":
    asyncio.run(main())
