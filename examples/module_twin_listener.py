"""Step 2: connect as myFirstModule, print every desired-properties patch, report it back.

Leave it running while update_module_twin.py changes the twin; stop it with Ctrl-C.

The module's connection string is IOTHUB_MODULE_CONNECTION_STRING when set (e.g. copied from
the Azure portal); otherwise it is built from the module's key, read with the service
connection string.
"""

import json
import os
import signal
import time

from azure.iot.device import IoTHubModuleClient

import hubconfig
from hubconfig import DEVICE_ID, MODULE_ID


def module_client() -> IoTHubModuleClient:
    connection_string = os.environ.get(hubconfig.MODULE_ENV, "").strip()
    if connection_string:
        return IoTHubModuleClient.create_from_connection_string(connection_string)
    hub = hubconfig.load()
    module = hub.registry_manager().get_module(DEVICE_ID, MODULE_ID)
    connection_string = hub.module_connection_string(
        DEVICE_ID, MODULE_ID, module.authentication.symmetric_key.primary_key
    )
    return IoTHubModuleClient.create_from_connection_string(
        connection_string, server_verification_cert=hub.ca_pem
    )


def signals_received() -> list:
    """A list that Ctrl-C (SIGINT) or SIGTERM appends to, so the client can shut down
    cleanly. Only an append: setting a threading.Event from a signal handler can deadlock
    when the signal lands while the main thread holds the Event's lock."""
    received = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: received.append(number))
    return received


def main() -> int:
    client = module_client()

    def desired_patch_received(patch):
        print(f"Desired properties patch: {json.dumps(patch)}", flush=True)
        if "telemetryInterval" in patch:
            reported = {"telemetryInterval": patch["telemetryInterval"]}
            client.patch_twin_reported_properties(reported)
            print(f"Reported properties patch: {json.dumps(reported)}", flush=True)

    try:
        client.connect()
        # Subscribes before returning, so no patch sent from now on is missed.
        client.on_twin_desired_properties_patch_received = desired_patch_received
        desired = client.get_twin()["desired"]
        print(f"Current desired properties: {json.dumps(desired)}")
        received = signals_received()
        print(f"Listening as {DEVICE_ID}/{MODULE_ID}; press Ctrl-C to stop.", flush=True)
        while not received:
            time.sleep(0.2)
    finally:
        client.shutdown()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    hubconfig.run(main)
