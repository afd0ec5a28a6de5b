"""hashplug.testing.compose: the compose fixtures skip with a reason instead of failing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashplug.testing.compose import compose_images, compose_unavailable


def test_images_are_read_with_variables_expanded(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "docker-compose.yml"
    f.write_text(
        "services:\n  a:\n    image: ${HP_TEST_IMAGE:-acme/a:1}\n  b:\n    image: acme/b:2\n"
    )
    assert compose_images(f) == ["acme/a:1", "acme/b:2"]
    monkeypatch.setenv("HP_TEST_IMAGE", "mine/a:3")
    assert compose_images(f) == ["mine/a:3", "acme/b:2"]


def test_a_project_whose_image_is_absent_cannot_start(tmp_path: Path) -> None:
    f = tmp_path / "docker-compose.yml"
    f.write_text("services:\n  a:\n    image: hashplug-test/absent-image:0\n")
    why = compose_unavailable(f)
    assert why is not None
    assert why.startswith(("no Docker engine", "no `docker compose`", "images not on this"))
    if why.startswith("images"):
        assert "hashplug-test/absent-image:0" in why


@pytest.mark.parametrize("name", ["milvus", "qdrant"])
def test_the_adapters_compose_files_name_their_images(name: str) -> None:
    f = Path(__file__).resolve().parents[1] / "adapters" / name / "docker" / "docker-compose.yml"
    assert compose_images(f) and all(":" in i for i in compose_images(f))
