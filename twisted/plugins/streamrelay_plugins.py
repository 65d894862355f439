from twisted.application.service import ServiceMaker

streamrelayBackend = ServiceMaker(
    "streamrelay backend",
    "streamrelay.backend.tap",
    "Store uploads streamed to it under a storage folder.",
    "streamrelay-backend",
)

streamrelayProxy = ServiceMaker(
    "streamrelay proxy",
    "streamrelay.proxy.tap",
    "Public REST face streaming every body to a streamrelay backend.",
    "streamrelay-proxy",
)
