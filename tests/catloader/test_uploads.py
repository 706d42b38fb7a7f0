"""Uploads: only real pictures, within limits, under generated names, shown to their owner."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from example_catloader.extensions import db
from example_catloader.models import Picture
from example_catloader.uploads import STORED_NAME
from tests.catloader.pictures import noise_png, picture_bytes
from tests.catloader.web_client import CatLoaderClient, path_of

MAX_BYTES = 20_000
MAX_PIXELS = 100_000


@pytest.fixture
def limited(make_catloader: Callable[..., Flask]) -> Flask:
    """CatLoader with small limits, so the tests' pictures can exceed them cheaply.

    (Not named ``app``: pytest-flask would run the whole test in one request context.)
    """
    return make_catloader(
        {"CATLOADER_MAX_PICTURE_BYTES": MAX_BYTES, "CATLOADER_MAX_PICTURE_PIXELS": MAX_PIXELS}
    )


def confirmed_client(app: Flask, email: str = "owner@example.com") -> CatLoaderClient:
    client = CatLoaderClient(app)
    assert client.signup(email).status_code == 303
    link = client.link_in(client.mails_to(email)[0])
    assert client.post_form(path_of(link), {}).status_code == 303
    return client


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def picture_rows(app: Flask) -> list[Picture]:
    with app.app_context():
        return list(db.session.execute(sa.select(Picture)).scalars())


PNG = picture_bytes("PNG")

BAD_UPLOADS = [
    pytest.param(
        "cat.png",
        b"meow, I am not a picture",
        400,
        "not a picture CatLoader can read",
        id="not-an-image",
    ),
    pytest.param(
        "cat.jpg",
        b"<html><script>alert(1)</script></html>",
        400,
        "not a picture CatLoader can read",
        id="html-named-jpg",
    ),
    pytest.param("cat.jpg", PNG, 400, "holds a PNG picture: rename it to .png", id="png-named-jpg"),
    pytest.param("cat.gif", picture_bytes("JPEG"), 400, "holds a JPG picture", id="jpeg-named-gif"),
    pytest.param("cat.svg", PNG, 400, "Only JPEG, PNG, GIF and WebP", id="svg-extension"),
    pytest.param("cat.html", PNG, 400, "Only JPEG, PNG, GIF and WebP", id="html-extension"),
    pytest.param("cat", PNG, 400, "Only JPEG, PNG, GIF and WebP", id="no-extension"),
    pytest.param("cat.bmp", picture_bytes("BMP"), 400, "Only JPEG, PNG, GIF and WebP", id="bmp"),
    pytest.param(
        "cat.png", picture_bytes("BMP"), 400, "not a picture CatLoader can read", id="bmp-named-png"
    ),
    pytest.param(
        "cat.jpg",
        picture_bytes("JPEG", (200, 150))[:400],
        400,
        "not a picture CatLoader can read",
        id="truncated-jpeg",
    ),
    pytest.param("cat.png", b"", 400, "That file is empty.", id="empty-file"),
    pytest.param("", PNG, 400, "Choose a picture to upload.", id="no-file"),
    pytest.param(
        "../../../../evil.png", PNG, 400, "That file name is not allowed", id="dot-dot-slash"
    ),
    pytest.param("/etc/evil.png", PNG, 400, "That file name is not allowed", id="absolute"),
    pytest.param("..", PNG, 400, "That file name is not allowed", id="dot-dot"),
    pytest.param("cat\x00.png", PNG, 400, "That file name is not allowed", id="nul"),
    pytest.param(
        "big.png",
        picture_bytes("PNG", (400, 300)),
        400,
        "too many pixels (400 x 300)",
        id="too-many-pixels",
    ),
    pytest.param(
        "big.png",
        noise_png((100, 100)),
        400,
        "too large: the limit is 19.5 KB",
        id="over-picture-limit",
    ),
    pytest.param(
        "huge.png",
        noise_png((200, 200)),
        413,
        "too large: the limit is 19.5 KB",
        id="over-request-limit",
    ),
]


@pytest.mark.parametrize(("filename", "content", "status", "message"), BAD_UPLOADS)
def test_bad_upload_is_refused_with_a_message(
    limited: Flask, tmp_path: Path, filename: str, content: bytes, status: int, message: str
) -> None:
    client = confirmed_client(limited)
    before = all_files(tmp_path)

    response = client.upload(filename, content)

    assert response.status_code == status
    page = html.unescape(response.get_data(as_text=True))
    assert message in page
    assert 'id="upload-form"' in page  # the uploads page, ready for another try
    assert picture_rows(limited) == []
    new_files = all_files(tmp_path) - before
    assert {p for p in new_files if not p.name.startswith("catloader.db")} == set()
    assert not (tmp_path / "evil.png").exists()
    assert not Path(limited.config["CATLOADER_UPLOAD_FOLDER"]).exists()


@pytest.mark.parametrize(
    ("filename_parameter", "status"),
    [
        pytest.param(r'"..\\..\\evil.png"', 400, id="backslashes"),
        pytest.param(r'"C:\\Users\\..\\..\\evil.png"', 400, id="windows-path"),
        pytest.param(r'"\\\\server\\share\\evil.png"', 400, id="unc-path"),
        pytest.param("../../evil.png", 400, id="unquoted"),
        # Without a separator the name is only a label: the file gets a generated name.
        pytest.param('"..%2F..%2Fevil.png"', 303, id="percent-encoded"),
    ],
)
def test_path_traversal_in_raw_requests(
    limited: Flask, tmp_path: Path, filename_parameter: str, status: int
) -> None:
    client = confirmed_client(limited)
    before = all_files(tmp_path)

    response = client.upload_raw(filename_parameter, PNG)

    assert response.status_code == status
    folder = Path(limited.config["CATLOADER_UPLOAD_FOLDER"])
    new_files = {p for p in all_files(tmp_path) - before if not p.name.startswith("catloader.db")}
    if status == 400:
        page = html.unescape(response.get_data(as_text=True))
        assert "That file name is not allowed" in page
        assert picture_rows(limited) == []
        assert new_files == set()
    else:
        [row] = picture_rows(limited)
        assert "/" not in row.original_name and "\\" not in row.original_name
        assert new_files == {folder / row.stored_name}
    assert not list(tmp_path.rglob("evil.png"))


@pytest.mark.parametrize(
    ("filename", "fmt", "media_type", "extension"),
    [
        ("tabby.jpg", "JPEG", "image/jpeg", "jpg"),
        ("tabby.JPEG", "JPEG", "image/jpeg", "jpg"),
        ("tabby.png", "PNG", "image/png", "png"),
        ("tabby.gif", "GIF", "image/gif", "gif"),
        ("tabby.webp", "WEBP", "image/webp", "webp"),
    ],
)
def test_good_upload_is_stored_under_a_generated_name(
    limited: Flask, filename: str, fmt: str, media_type: str, extension: str
) -> None:
    client = confirmed_client(limited)
    content = picture_bytes(fmt)

    response = client.upload(filename, content)

    assert response.status_code == 303
    [row] = picture_rows(limited)
    assert STORED_NAME.fullmatch(row.stored_name)
    assert row.stored_name.endswith(f".{extension}")
    assert (row.media_type, row.width, row.height, row.size) == (media_type, 64, 48, len(content))
    folder = Path(limited.config["CATLOADER_UPLOAD_FOLDER"])
    assert [p.name for p in folder.iterdir()] == [row.stored_name]
    assert (folder / row.stored_name).read_bytes() == content
    assert folder.resolve().is_relative_to(Path(limited.instance_path).resolve())
    assert f"{filename} is in your collection" in client.page("/backoffice/uploads")


def test_shown_name_is_made_safe(limited: Flask) -> None:
    client = confirmed_client(limited)
    client.upload("<img src=x onerror=alert(1)>tom.png", PNG)
    [row] = picture_rows(limited)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", row.original_name)
    page = client.page("/backoffice/uploads")
    assert "<img src=x" not in page


def test_pictures_are_served_to_their_owner_only(limited: Flask) -> None:
    owner = confirmed_client(limited, "owner@example.com")
    owner.upload("mine.png", PNG)
    [row] = picture_rows(limited)
    url = f"/backoffice/picture/{row.id}"

    with owner.http.get(url) as served:
        assert served.status_code == 200
        assert served.get_data() == PNG
        assert served.mimetype == "image/png"
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert "private" in served.headers["Cache-Control"]

    other = confirmed_client(limited, "other@example.com")
    assert other.http.get(url).status_code == 404
    assert "mine.png" not in other.page("/backoffice/uploads")
    for missing in ("999", "0", str(2**63), "9" * 40, "-1", "1.0", "abc"):
        assert other.http.get(f"/backoffice/picture/{missing}").status_code == 404

    anonymous = CatLoaderClient(limited).http.get(url)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].startswith("/auth/login")
