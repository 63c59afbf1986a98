"""When who may watch live events changes, open pages are told at once (events.access_changed).

A page's websocket checks its session when it opens; these make it check again the moment
its account logs out, is deactivated, changes password or loses a role or permission. Each
message goes out once the change is committed: sent earlier, a page would check the data as
it was. What no signal reports (a session expiring, rows changed with ``update()``) pages
find out by checking again every RECHECK_SECONDS (devices/consumers.py).
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from .events import access_changed

# A save that touches only these cannot end anyone's access (a login saves last_login).
HARMLESS_FIELDS = {"last_login"}


def tell(user_ids, ended_session: str = "") -> None:
    user_ids = list(user_ids)
    if user_ids:
        transaction.on_commit(lambda: access_changed(user_ids, ended_session))


def logged_out(sender, request, user, **kwargs):
    if user is not None:
        tell([user.pk], request.session.session_key or "")


def user_saved(sender, instance, created, update_fields, **kwargs):
    # The session auth hash (the password) and is_active are what a saved account can change.
    if not created and not (update_fields and set(update_fields) <= HARMLESS_FIELDS):
        tell([instance.pk])


def user_deleted(sender, instance, **kwargs):
    tell([instance.pk])


def members_of(groups) -> list[int]:
    return list(get_user_model().objects.filter(groups__in=groups).values_list("pk", flat=True))


def group_deleted(sender, instance, **kwargs):
    tell(members_of([instance]))  # before the delete: afterwards the group has no members


def roles_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    """A user's groups or permissions, or a group's permissions, from either side."""
    User = get_user_model()
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if sender is Group.permissions.through:
        if not reverse:  # group.permissions.add(...)
            tell(members_of([instance]))
        else:  # permission.group_set.add(...)
            tell(members_of(pk_set if pk_set is not None else instance.group_set.all()))
    elif isinstance(instance, User):  # user.groups.add(...), user.user_permissions.add(...)
        tell([instance.pk])
    else:  # group.user_set.add(...), permission.user_set.add(...); pre_clear: before it
        tell(pk_set if pk_set is not None else instance.user_set.values_list("pk", flat=True))


def connect() -> None:
    User = get_user_model()
    user_logged_out.connect(logged_out, dispatch_uid="devices.logged_out")
    post_save.connect(user_saved, sender=User, dispatch_uid="devices.user_saved")
    post_delete.connect(user_deleted, sender=User, dispatch_uid="devices.user_deleted")
    pre_delete.connect(group_deleted, sender=Group, dispatch_uid="devices.group_deleted")
    for through in (User.groups.through, User.user_permissions.through):
        m2m_changed.connect(roles_changed, sender=through, dispatch_uid=f"devices.{through}")
    m2m_changed.connect(
        roles_changed, sender=Group.permissions.through, dispatch_uid="devices.group_perms"
    )
