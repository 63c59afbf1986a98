"""{% twin_summary twin as t %}: a hub twin document read for display (devices.twins)."""

from django import template

from devices import twins

register = template.Library()


@register.simple_tag
def twin_summary(twin):
    return twins.TwinSummary(twin) if twin else None
