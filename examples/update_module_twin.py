"""Step 3: set the desired property telemetryInterval of myFirstModule's twin to 122.

The update carries the etag of the twin just read, so it fails (412) rather than overwrite a
change someone else made in between.
"""

import json

from azure.iot.hub.models import Twin, TwinProperties

import hubconfig
from hubconfig import DEVICE_ID, MODULE_ID


def main() -> int:
    registry = hubconfig.load().registry_manager()

    twin = registry.get_module_twin(DEVICE_ID, MODULE_ID)
    print(f"Module twin of {DEVICE_ID}/{MODULE_ID}, etag {twin.etag}")

    twin_patch = Twin(properties=TwinProperties(desired={"telemetryInterval": 122}))
    updated = registry.update_module_twin(DEVICE_ID, MODULE_ID, twin_patch, twin.etag)
    print("Desired properties now:")
    print(json.dumps(updated.properties.desired, indent=2))
    return 0


if __name__ == "__main__":
    hubconfig.run(main)
