"""Step 1: create the device myFirstDevice and its module myFirstModule, print their keys.

Run it again and it reads back the identities it created before instead of failing.
"""

from http import HTTPStatus

from msrest.exceptions import HttpOperationError

import hubconfig
from hubconfig import DEVICE_ID, MODULE_ID


def create_or_get(create, get):
    """``create()``, or ``get()`` when the hub answers 409 Conflict: it exists already."""
    try:
        return create(), "created"
    except HttpOperationError as e:
        if e.response.status_code != HTTPStatus.CONFLICT:
            raise
        return get(), "already there"


def main() -> int:
    registry = hubconfig.load().registry_manager()

    device, how = create_or_get(
        lambda: registry.create_device_with_sas(DEVICE_ID, None, None, "enabled"),
        lambda: registry.get_device(DEVICE_ID),
    )
    print(f"Device {device.device_id} ({how})")
    print(f"  primary key: {device.authentication.symmetric_key.primary_key}")

    # Empty keys: the hub generates them, as it did for the device.
    module, how = create_or_get(
        lambda: registry.create_module_with_sas(DEVICE_ID, MODULE_ID, None, None, None),
        lambda: registry.get_module(DEVICE_ID, MODULE_ID),
    )
    print(f"Module {module.device_id}/{module.module_id} ({how})")
    print(f"  primary key: {module.authentication.symmetric_key.primary_key}")
    return 0


if __name__ == "__main__":
    hubconfig.run(main)
