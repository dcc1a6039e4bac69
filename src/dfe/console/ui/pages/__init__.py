"""The admin pages, one module per area; `routers` is what the UI app includes."""

from dfe.console.ui.pages import admin, auth, estate, instances, overview, people

routers = [
    auth.router,
    overview.router,
    instances.router,
    estate.router,
    people.router,
    admin.router,
]
