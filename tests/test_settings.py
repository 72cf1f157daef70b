"""Settings: one reading of the environment, clear problems, Heroku's URLs."""

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import Settings


def test_defaults_match_the_spec():
    s = Settings.parse({})
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.database_url == "sqlite:///flywheel.db"
    assert s.prompts_dir == Path("prompts") and s.port == 3000 and s.log_level == "INFO"
    assert s.model == "gpt-5.4-mini" and not s.socket_mode
    assert s.journal_dir == Path("flywheel-journal") and s.shutdown_grace == 25.0
    # A stalled model must end in an apology well within a minute of the mention, the time
    # before the model call (claim, thread history, Slack's rate budget) included.
    assert s.model_timeout == 30.0


def test_heroku_postgres_url_is_rewritten():
    s = Settings.parse({"DATABASE_URL": "postgres://u:p@host:5432/db"})
    assert s.database_url == "postgresql://u:p@host:5432/db"


def test_app_token_selects_socket_mode_and_needs_no_signing_secret():
    s = Settings.parse({"SLACK_APP_TOKEN": "xapp-1-x", "SLACK_BOT_TOKEN": "xoxb-1", "OPENAI_API_KEY": "k"})
    assert s.socket_mode
    assert s.problems_for(slack=True, model=True) == []
    assert [p.split()[0] for p in s.problems_for(slack=True, socket=False)] == ["SLACK_SIGNING_SECRET"]


def test_a_local_model_server_needs_no_key():
    s = Settings.parse({"OPENAI_BASE_URL": "http://localhost:11434/v1"})
    assert s.problems_for(model=True) == []


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SLACK_BOT_TOKEN", "xoxp-123", "must be a bot token starting with xoxb-"),
    ("SLACK_APP_TOKEN", "xoxb-123", "must be an app-level token starting with xapp-"),
    ("SLACK_API_URL", "slack.com/api", "must be an http(s) URL"),
    ("OPENAI_BASE_URL", "localhost:11434", "must be an http(s) URL"),
    ("PORT", "0", "must be a port number between 1 and 65535"),
    ("LOG_LEVEL", "chatty", "must be one of DEBUG"),
    ("DATABASE_URL", "mysql://x", "must be a sqlite:/// or postgresql://"),
    ("DATABASE_URL", "postgresql://u:s3cret@h:notaport/db", "its port is not a number"),
    ("FLYWHEEL_MODEL_TIMEOUT", "soon", "must be a number of seconds"),
    ("FLYWHEEL_SHUTDOWN_GRACE", "-1", "must be a number of seconds between 0 and 3600"),
    ("FLYWHEEL_UP_REACTIONS", "", "names no reaction"),
    ("FLYWHEEL_DOWN_REACTIONS", " , :", "names no reaction"),
    ("FLYWHEEL_PRICES", "/nonexistent/prices.json", "which does not exist"),
])
def test_malformed_settings_name_the_setting_and_the_fix(name: str, value: str, says: str):
    s = Settings.parse({name: value})
    with pytest.raises(ConfigError) as err:
        s.require()
    [problem] = err.value.problems
    assert problem.startswith(name) and says in problem


def test_every_bad_setting_is_reported_in_one_run(tmp_path: Path):
    prices = tmp_path / "prices.json"
    prices.write_text('{"models": {"m": {"input": "cheap"}}}')
    s = Settings.parse({"PORT": "99999", "FLYWHEEL_PRICES": str(prices), "LOG_LEVEL": "loud",
                        "FLYWHEEL_UP_REACTIONS": ","})
    with pytest.raises(ConfigError) as err:
        s.require()
    assert sorted(p.split()[0] for p in err.value.problems) == [
        "FLYWHEEL_PRICES", "FLYWHEEL_UP_REACTIONS", "LOG_LEVEL", "PORT"]


def test_missing_settings_are_only_a_problem_for_commands_that_need_them():
    s = Settings.parse({})
    assert s.problems_for() == []
    missing = [p.split()[0] for p in s.problems_for(slack=True, model=True)]
    assert missing == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY"]


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nFLYWHEEL_MODEL=from-dotenv\n")
    s = Settings.from_env({"FLYWHEEL_MODEL": "from-env"}, dotenv=env_file)
    assert s.port == 4000 and s.model == "from-env"


def test_reactions_are_configurable_and_colons_are_optional():
    s = Settings.parse({"FLYWHEEL_UP_REACTIONS": ":white_check_mark:, +1"})
    assert s.up_reactions == frozenset({"white_check_mark", "+1"})


def test_secrets_lists_every_credential_including_a_database_password():
    s = Settings.parse({"SLACK_BOT_TOKEN": "xoxb-123456789", "OPENAI_API_KEY": "sk-abcdefgh123",
                        "DATABASE_URL": "postgres://u:hunter2hunter2@h/db",
                        "OPENAI_BASE_URL": "https://proxy:pr0xy-pa55@llm.example.com/v1?api-key=azure-key-42&v=1"})
    assert set(s.secrets) == {"xoxb-123456789", "sk-abcdefgh123", "hunter2hunter2", "pr0xy-pa55", "azure-key-42"}
