__version__ = "0.1.0"

#: The plugin API this sfumato provides. A plugin module declares the version it targets as the
#: integer ``SFUMATO_PLUGIN_API = 1``; any other value is refused at load time, with a message
#: saying what the plugin declares and what this sfumato supports.
PLUGIN_API_VERSION = 1
