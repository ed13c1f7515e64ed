"""`DeployServer`: the whole server as one object, embedded or headless.

INTERFACE CONTRACT (the console, the demo, the CLI and the benchmarks code against
exactly these names; the implementation may add, not rename):

    server = DeployServer(ServerConfig(port=0, data_dir=tmp))
    await server.start()          # binds, migrates the DB; raises PortInUseError,
                                  # DataDirError, DatabaseTooNewError
    server.port, server.url       # actual port after bind; "http://127.0.0.1:<port>"
    server.enrollment_token, server.admin_token
    unsubscribe = server.add_listener(fn)   # fn(event: str, payload: dict), called on
                                  # the loop after the change is persisted, for every
                                  # event sent to room "consoles" (device_update,
                                  # software_deployment_update, deployment_update)
    await server.list_devices() -> list[dict]          # rows as in GET /api/devices
    await server.list_software() -> list[dict]
    await server.add_software(path, name=..., version=..., installer_type=...,
                              install_args="", timeout_s=3600, file_name=None,
                              progress=None) -> dict   # copies + hashes off the loop;
                                  # progress(fraction 0..1) called on the loop
    await server.create_deployment(software_ids, device_ids,
                                   deployment_name=None) -> dict  # with "targets"
    await server.get_deployment(deployment_id) -> dict
    await server.list_deployments(limit=200) -> list[dict]  # with "counts", "progress"
    await server.cancel_deployment(deployment_id) -> dict
    await server.retry_deployment(deployment_id) -> dict
    await server.regenerate_enrollment_token() -> str
    await server.stop()           # clean disconnect of agents, DB disposed
"""
