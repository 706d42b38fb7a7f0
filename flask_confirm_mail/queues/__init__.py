"""Task-queue integrations, an optional part: delivery from the app's own job queue.

With ``CONFIRM_MAIL_DELIVERY = "queue"`` the outbox ids each commit saved go to the
function registered with :meth:`ConfirmMail.handoff <flask_confirm_mail.ConfirmMail.handoff>`,
whose job calls :func:`flask_confirm_mail.deliver`; a periodic job calls
:func:`flask_confirm_mail.deliver_due`. :mod:`.celery` does both for Celery.
"""
