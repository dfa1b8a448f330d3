__version__ = "0.1.0"

#: The plugin API this sfumato provides. A plugin module declares the version it targets as
#: ``SFUMATO_PLUGIN_API = 1``; a plugin targeting another major version is refused at load time.
PLUGIN_API_VERSION = 1
