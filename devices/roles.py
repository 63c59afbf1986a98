"""The three roles, as Django groups holding this app's permissions.

Made (and repaired) after every ``migrate`` and test-database flush by a post_migrate
handler, so a fresh database always has them and an edited group is put right.
"""

VIEW = ["view_device", "view_module", "view_auditentry"]
ROLE_PERMISSIONS = {
    "viewer": VIEW,
    "operator": [*VIEW, "reveal_connection_string", "edit_twin"],
    "admin": [*VIEW, "reveal_connection_string", "edit_twin", "manage_identities"],
}


def ensure_roles(**kwargs) -> None:
    from django.contrib.auth.models import Group, Permission

    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(
            Permission.objects.filter(content_type__app_label="devices", codename__in=codenames)
        )
