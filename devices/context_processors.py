from datetime import UTC, datetime

from . import access
from . import hub as hub_client


def hub(request):
    """What every page shows in its header: which hub, how it answers (as this process's
    last calls found it), and the user's role."""
    try:
        cfg = hub_client.config()
        target = {"name": cfg.host_name, "local": cfg.local}
    except hub_client.HubNotConfigured:
        target = {"name": "no hub configured", "local": True}
    # An error page for a request refused before authentication (a bad Host) has no user.
    user = getattr(request, "user", None)
    role = access.role_of(user) if user is not None and user.is_authenticated else None
    health = hub_client.health()
    since = datetime.fromtimestamp(health.since, UTC) if health.since else None
    return {"hub_target": target, "hub_health": health, "hub_since": since, "role": role}
