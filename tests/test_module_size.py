"""No module of tapa_lab is over 300 lines (STYLE.md: one concept per file); a module that grows past it is split."""

from __future__ import annotations

from pathlib import Path

MAX_LINES = 300
PACKAGE = Path(__file__).resolve().parents[1] / "tapa_lab"


def long_modules(root: Path, limit: int) -> dict[str, int]:
    """Modules under ``root`` with more than ``limit`` lines, by path relative to ``root``'s parent."""
    sizes = {path.relative_to(root.parent).as_posix(): len(path.read_text().splitlines())
             for path in sorted(root.rglob("*.py"))}
    return {name: lines for name, lines in sizes.items() if lines > limit}


def test_no_module_is_over_300_lines():
    assert long_modules(PACKAGE, MAX_LINES) == {}


def test_the_check_sees_a_long_module(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "short.py").write_text("x = 1\n" * MAX_LINES)
    (package / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert long_modules(package, MAX_LINES) == {"pkg/long.py": MAX_LINES + 1}
