"""gunicorn settings for CatLoader, with the link tokens kept out of gunicorn's logs::

    gunicorn -c python:example_catloader.gunicorn_conf 'example_catloader:create_app()'

gunicorn's debug log (``GET /confirm/<token>``) and its access log print each request's
path, and a confirmation link's path holds a live token. The filter goes on gunicorn's
loggers when this file is read, before gunicorn writes its first line; the app's own
``init_app`` redacts Flask's and werkzeug's logs.
"""

from __future__ import annotations

from flask_confirm_mail.redaction import install_log_redaction

#: CONFIRM_MAIL_URL_PREFIX, as seen in the request line (add any SCRIPT_NAME mount point).
CONFIRM_ROUTE = "/confirm"

install_log_redaction(["gunicorn.error", "gunicorn.access"], [CONFIRM_ROUTE])

accesslog = "-"
