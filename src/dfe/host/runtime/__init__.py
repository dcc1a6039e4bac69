"""The instance runtime: a REST API over an instance's own database and files.

`create_runtime_app()` builds the one app every instance runs; `InstanceContext`
is what it needs of an instance (built from the Console's `InstanceConfig`);
`bind(app, context)` serves one instance without the web tier.
"""

from dfe.host.runtime.app import bind, create_runtime_app
from dfe.host.runtime.context import SCOPE_KEY, InstanceContext, instance_engine

__all__ = ["SCOPE_KEY", "InstanceContext", "bind", "create_runtime_app", "instance_engine"]
