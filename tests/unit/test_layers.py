"""The dependency rules: a pure engine, and an API that never needs torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_engine_imports_no_celery_sql_or_prometheus() -> None:
    loaded = run_python("""
        import sys
        import workers.engine, workers.engine.datasets, workers.engine.models
        print(",".join(sorted(m for m in ("celery", "sqlalchemy", "prometheus_client", "services",
                                          "fastapi", "kombu") if m in sys.modules)))
    """)
    assert loaded == ""


def test_api_serves_a_submission_without_importing_torch(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "OPTBENCH_HOME": str(tmp_path)}
    env.pop("OPTBENCH_DATABASE_URL", None)
    env.pop("OPTBENCH_BROKER_URL", None)
    out = run_python(
        """
        import sys
        from fastapi.testclient import TestClient
        from services.db.migrate import upgrade
        from services.api.app import create_app
        from services.spec import LECTURE_SPEC
        upgrade()
        client = TestClient(
            create_app(), base_url="http://127.0.0.1", client=("127.0.0.1", 50000)
        )
        assert client.post("/v1/jobs", json=LECTURE_SPEC).status_code == 202
        assert client.get("/v1/catalog").status_code == 200
        print("torch" in sys.modules, "workers" in sys.modules)
    """,
        env=env,
    )
    assert out == "False False"
