"""The members' area: the list of one's cat pictures, uploading, viewing (``bl_backoffice``)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from flask_confirm_mail import confirmed_required

from .extensions import db
from .forms import UploadForm
from .models import Picture, User
from .uploads import ACCEPT_ATTRIBUTE, PictureFolder, UploadRefused, check_picture, human_size

bp = Blueprint("bl_backoffice", __name__, url_prefix="/backoffice")

#: Larger ids cannot exist (a 64-bit primary key); the route answers 404 for them.
MAX_ID = 2**63 - 1


def picture_folder() -> PictureFolder:
    return PictureFolder(current_app.config["CATLOADER_UPLOAD_FOLDER"])


def max_picture_bytes() -> int:
    return int(current_app.config["CATLOADER_MAX_PICTURE_BYTES"])


def render_uploads(form: UploadForm | None = None, status: int = 200) -> Any:
    user: User = current_user._get_current_object()
    page = render_template(
        "backoffice/uploads.html",
        form=form or UploadForm(),
        pictures=user.pictures,
        accept=ACCEPT_ATTRIBUTE,
        max_size=human_size(max_picture_bytes()),
    )
    return page, status


@bp.get("/uploads")
@login_required
def listuploads() -> Any:
    return render_uploads()


@bp.post("/upload")
@confirmed_required
def upload() -> Any:
    form = UploadForm()
    if not form.validate_on_submit():
        return render_uploads(form, 400)
    try:
        picture = check_picture(
            request.files.get(form.picture.name),
            max_bytes=max_picture_bytes(),
            max_pixels=int(current_app.config["CATLOADER_MAX_PICTURE_PIXELS"]),
        )
    except UploadRefused as refusal:
        form.picture.errors = [str(refusal)]
        return render_uploads(form, 400)
    folder = picture_folder()
    stored_name = folder.save(picture)
    row = Picture(
        owner_id=current_user.id,
        stored_name=stored_name,
        original_name=picture.shown_name,
        media_type=picture.format.media_type,
        size=len(picture.data),
        width=picture.width,
        height=picture.height,
    )
    db.session.add(row)
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        folder.delete(stored_name)
        raise
    flash(f"{picture.shown_name} is in your collection. Purr!", "success")
    return redirect(url_for("bl_backoffice.listuploads"), 303)


@bp.get(f"/picture/<int(max={MAX_ID}):picture_id>")
@login_required
def picture(picture_id: int) -> Any:
    """A picture's file, for its owner only; anyone else gets 404, as if it did not exist."""
    row = db.session.get(Picture, picture_id)
    if row is None or row.owner_id != current_user.id:
        abort(404)
    path = picture_folder().path_of(row.stored_name)
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=row.media_type, max_age=0, conditional=True)
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@bp.app_errorhandler(RequestEntityTooLarge)
def upload_too_large(error: RequestEntityTooLarge) -> Any:
    if request.endpoint == "bl_backoffice.upload" and current_user.is_authenticated:
        form = UploadForm(formdata=None)
        limit = human_size(max_picture_bytes())
        form.picture.errors = [f"That picture is too large: the limit is {limit}."]
        return render_uploads(form, 413)
    message = "That request is too large."
    return render_template("error.html", title="Too large", message=message), 413
