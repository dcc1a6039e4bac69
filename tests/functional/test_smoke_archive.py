from sqlalchemy import func, select, text

from dfe.models import ARCHIVED_TABLES, AppKey, Instance, ServerType
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import archive, infrastructure, instances, identity


def test_delete_and_restore_instance(db):
    with db.transaction(actor="tester") as s:
        mount = infrastructure.create_mount(s, MountCreate(name="m", root_path="/srv/m"))
        cluster = infrastructure.create_cluster(s, ClusterCreate(name="c", subdomain="apps.example.com"))
        servers = {}
        for t in ServerType:
            servers[t] = infrastructure.create_server(s, ServerCreate(name=f"s-{t}", server_type=t, host="localhost", mount=mount.name, config={"password": "pw"}))
            infrastructure.assign_server(s, cluster.id, servers[t].id)
        user = identity.create_user(s, UserCreate(email="Ann@Example.com", password="correct horse battery"))
        instances.create_instance_record(s, "alpha", user, cluster, servers)
    with db.transaction(actor="tester") as s:
        instances.delete_instance_record(s, "alpha")
    with db.session() as s:
        arch = ARCHIVED_TABLES[Instance.__table__]
        row = s.execute(select(arch)).one()
        assert row.archived_by == "tester"
        assert s.scalar(select(func.count()).select_from(AppKey).where(AppKey.owner_type == "instance")) == 0
    with db.transaction(actor="tester") as s:
        archive.restore(s, "instance", "alpha")
    with db.session() as s:
        assert instances.get_instance(s, "alpha").name == "alpha"
        assert s.scalar(select(func.count()).select_from(arch)) == 0
