def test_a_device_created_through_the_sdk_can_be_read_back(registry):
    created = registry.create_device_with_sas("d1", None, None, "enabled")
    assert registry.get_device("d1").etag == created.etag
