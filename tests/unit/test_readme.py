"""README opens with the two commands, and CI runs the second one verbatim."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_a_demo_command_and_a_test_command() -> None:
    demo, tests = readme_commands()
    assert demo.endswith("optbench demo")
    assert "pytest" in tests
    assert "requirements/cpu.txt" in demo and "requirements/cpu.txt" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = readme_commands()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_the_cpu_requirements_pin_torch_while_the_project_keeps_a_range() -> None:
    pins = (REPO / "requirements" / "cpu.txt").read_text()
    assert "torch==2.13.0" in pins.splitlines()
    assert '"torch>=2.4,<3"' in (REPO / "pyproject.toml").read_text()
