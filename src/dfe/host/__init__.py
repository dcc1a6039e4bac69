"""The web tier and the instance runtime.

`dfe.host.app` is the web tier (`dfe serve host`): it takes the instance name from
the Host header, gets the instance's config from the Console (cached, invalidated
by the Console's change feed: `dfe.host.configs`) and hands the request to the
runtime with that instance's context. `dfe.host.runtime` is the application every
instance runs: a REST API over its own database and its own files.
"""
