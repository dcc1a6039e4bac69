"""DFE: a control plane that hosts many isolated application instances on clusters of servers."""

__version__ = "0.1.0"
