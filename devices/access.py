"""Roles and the one place that checks them.

Roles are Django groups holding this app's permissions (created by a migration):
viewer reads and never sees keys; operator also reveals connection strings and edits
twins; admin also creates, disables and deletes identities and regenerates keys.
"""

import functools

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"

VIEW = "devices.view_device"  # every role has it: what pages and the live websocket check
REVEAL_KEYS = "devices.reveal_connection_string"
EDIT_TWIN = "devices.edit_twin"
MANAGE_IDENTITIES = "devices.manage_identities"

WHY = {
    VIEW: (
        "Your account has no role yet: an admin gives you one (viewer, operator or admin) "
        "in the Django admin, under Users."
    ),
    REVEAL_KEYS: "Connection strings carry secret keys; only operators and admins may see them.",
    EDIT_TWIN: "Editing twins is for operators and admins; viewers can only read them.",
    MANAGE_IDENTITIES: (
        "Creating, disabling and deleting identities and regenerating keys is for admins."
    ),
}


def role_of(user) -> str:
    """The user's role; "" for an account nobody has given one yet."""
    if user.has_perm(MANAGE_IDENTITIES):
        return ADMIN
    if user.has_perm(EDIT_TWIN):
        return OPERATOR
    return VIEWER if user.has_perm(VIEW) else ""


def forbidden(request, permission: str):
    return render(request, "403.html", {"reason": WHY[permission]}, status=403)


def requires(permission: str = VIEW):
    """Login required, and ``permission`` (by default VIEW: any role); otherwise a 403 page
    saying why. The live events websocket checks VIEW too (devices/consumers.py)."""

    def decorate(view):
        @login_required
        @functools.wraps(view)
        def checked(request, *args, **kwargs):
            if not request.user.has_perm(permission):
                return forbidden(request, permission)
            return view(request, *args, **kwargs)

        return checked

    return decorate
