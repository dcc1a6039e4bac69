"""The Dashboard: the users' self-service portal (accounts and their instances).

It holds no database credentials: every read and write, logins included, goes to
the Console through the ops client, signed with the Dashboard's app key, and acts
for a user only with the user token the Console returned at login. Server-rendered
Jinja2 pages with htmx (vendored under dfe/static/vendor), no Node at run time.
"""
