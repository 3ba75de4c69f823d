"""The local production-shaped stack (``make stack``); the API lives in :mod:`.stack`."""
