//! Issue 17, PostgreSQL items 1 to 5.

use backup_testkit::postgres::PgCluster;

use crate::util::Scratch;

fn scalar(pg: &PgCluster, db: &str, sql: &str) -> String {
    pg.psql(db, sql).trim().to_owned()
}

fn db_exists(pg: &PgCluster, db: &str) -> bool {
    scalar(
        pg,
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    ) == "1"
}

fn snapshot_count(s: &Scratch) -> usize {
    s.json(&["list"]).as_array().map_or(0, Vec::len)
}

/// A database with text search objects of every kind (parser, template,
/// dictionary, configuration), a table that uses them, another table with
/// a foreign key to it and a view on it.
const TEXT_SEARCH: &str = "
CREATE TEXT SEARCH PARSER public.prs (START = prsd_start, GETTOKEN = prsd_nexttoken,
    END = prsd_end, LEXTYPES = prsd_lextype, HEADLINE = prsd_headline);
CREATE TEXT SEARCH TEMPLATE public.tmpl (INIT = dsimple_init, LEXIZE = dsimple_lexize);
CREATE TEXT SEARCH DICTIONARY public.dict (TEMPLATE = public.tmpl, STOPWORDS = english);
CREATE TEXT SEARCH CONFIGURATION public.cfg (PARSER = public.prs);
ALTER TEXT SEARCH CONFIGURATION public.cfg ADD MAPPING FOR word, asciiword WITH public.dict;
CREATE TABLE public.docs (
    id int PRIMARY KEY,
    body text,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('public.cfg', body)) STORED
);
CREATE INDEX docs_tsv ON public.docs USING gin (tsv);
CREATE TABLE public.notes (id int PRIMARY KEY, doc_id int REFERENCES public.docs (id), note text);
CREATE VIEW public.doc_titles AS SELECT id, left(body, 10) AS title FROM public.docs;
INSERT INTO public.docs (id, body) SELECT i, 'the document number ' || i FROM generate_series(1, 50) i;
INSERT INTO public.notes SELECT i, i, 'note ' || i FROM generate_series(1, 20) i;
";

/// Item 1: a selective `--drop --include` into a database that holds text
/// search objects keeps them (PostgreSQL reports 23505 for those), keeps
/// the foreign keys and views of other tables, and refuses, before it
/// drops anything, when the drop would take objects the snapshot does not
/// recreate.
#[test]
fn r17_1_selective_drop_keeps_text_search_objects_and_dependents() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql("src", TEXT_SEARCH);
    let s = Scratch::new();
    s.init();
    let v = s.json(&["create", &pg.url("src")]);
    let id = v["id"].as_str().unwrap().to_owned();
    s.ok(&["restore", &id, "--to", &pg.url("live")]);

    // The live database moved on: documents deleted, a note added, and a
    // view of its own over the table to replace.
    pg.psql(
        "live",
        "DELETE FROM public.notes WHERE doc_id > 10; DELETE FROM public.docs WHERE id > 10;
         INSERT INTO public.notes VALUES (100, 1, 'added later');
         CREATE VIEW public.extra AS SELECT id FROM public.docs WHERE id < 5;",
    );
    let before = snapshot_count(&s);
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &pg.url("live"),
            "--include",
            "public.docs",
            "--drop",
            "--yes",
        ],
        1,
    );
    assert!(err.contains("view public.extra"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // Refused before the safety backup, and nothing was dropped.
    assert_eq!(snapshot_count(&s), before);
    assert_eq!(
        scalar(&pg, "live", "SELECT count(*) FROM public.extra"),
        "4"
    );
    assert_eq!(
        scalar(
            &pg,
            "live",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "1"
    );

    pg.psql("live", "DROP VIEW public.extra");
    let out = s.json(&[
        "restore",
        &id,
        "--to",
        &pg.url("live"),
        "--include",
        "public.docs",
        "--drop",
        "--yes",
    ]);
    assert_eq!(
        out["report"]["details"]["action"],
        "replace the selected tables in the existing database"
    );
    assert_eq!(
        scalar(&pg, "live", "SELECT count(*) FROM public.docs"),
        "50"
    );
    // The other table and its foreign key to the replaced one are intact.
    assert_eq!(
        scalar(&pg, "live", "SELECT count(*) FROM public.notes"),
        "11"
    );
    assert_eq!(
        scalar(
            &pg,
            "live",
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
        ),
        "notes"
    );
    assert_eq!(
        scalar(&pg, "live", "SELECT count(*) FROM public.doc_titles"),
        "50"
    );
    // The text search objects were kept and still work.
    assert_eq!(
        scalar(
            &pg,
            "live",
            "SELECT count(*) FROM public.docs WHERE tsv @@ to_tsquery('public.cfg', 'document')"
        ),
        "50"
    );
    let warnings = out["report"]["details"]["warnings"].to_string();
    assert!(
        warnings.contains("TEXT SEARCH DICTIONARY public.dict already exists"),
        "{warnings}"
    );
}

/// Items 2 and 5: a restore to a cluster that lacks the roles the
/// snapshot names lists them all before anything is created, points at
/// `--pg-globals` and `--skip-missing-roles`; the latter leaves out and
/// reports each statement; a snapshot with globals creates the roles and
/// the report lists them.
#[test]
fn r17_2_missing_roles_are_listed_before_anything_is_created() {
    let pg = PgCluster::start();
    let other = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE ROLE app NOLOGIN; CREATE ROLE reader NOLOGIN; CREATE DATABASE src OWNER app",
    );
    pg.psql(
        "src",
        "CREATE TABLE public.t (id int, who text);
         ALTER TABLE public.t OWNER TO app;
         ALTER TABLE public.t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY only_mine ON public.t FOR SELECT TO reader USING (who = current_user);
         GRANT SELECT ON public.t TO reader;
         INSERT INTO public.t SELECT i, 'reader' FROM generate_series(1, 10) i;",
    );
    let s = Scratch::new();
    s.init();
    let id = s.json(&["create", &pg.url("src")])["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let err = s.fails(&["restore", &id, "--to", &other.url("copy")], 1);
    assert!(err.contains("`app`") && err.contains("`reader`"), "{err}");
    assert!(err.contains("--pg-globals"), "{err}");
    assert!(err.contains("--skip-missing-roles"), "{err}");
    assert!(!db_exists(&other, "copy"), "nothing may be created");

    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &other.url("copy"),
        "--skip-missing-roles",
    ]);
    assert!(
        out.contains("skipped: `CREATE POLICY only_mine") && out.contains("role reader is missing"),
        "{out}"
    );
    assert!(
        out.contains("OWNER TO app") && out.contains("role app is missing"),
        "{out}"
    );
    // The database headline counts stream data, not files.
    assert!(out.contains("of stream data"), "{out}");
    assert!(!out.contains(" dirs, "), "{out}");
    assert_eq!(
        scalar(&other, "copy", "SELECT count(*) FROM public.t"),
        "10"
    );
    assert_eq!(
        scalar(&other, "copy", "SELECT count(*) FROM pg_policy"),
        "0"
    );

    // With the roles in the snapshot, they are created and listed.
    let id2 = s.json(&["create", &pg.url("src"), "--pg-globals"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.ok(&["restore", &id2, "--to", &other.url("copy2")]);
    assert!(out.contains("roles created: app, reader"), "{out}");
    assert_eq!(
        scalar(
            &other,
            "copy2",
            "SELECT polname || ':' || array_to_string(polroles::regrole[], ',') FROM pg_policy"
        ),
        "only_mine:reader"
    );
    assert_eq!(
        scalar(
            &other,
            "copy2",
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't'"
        ),
        "app"
    );
    assert_eq!(
        scalar(
            &other,
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'copy2'"
        ),
        "app"
    );
}

/// Item 3: a view whose definition `pg_dump` writes as a separate rule
/// (here because it relies on its table's primary key) is left out with
/// its rule and reported, never restored as a placeholder of NULLs.
#[test]
fn r17_3_include_leaves_no_placeholder_views() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql(
        "src",
        "CREATE TABLE public.base (id int PRIMARY KEY, name text);
         INSERT INTO public.base VALUES (1, 'one'), (2, 'two');
         CREATE VIEW public.grouped AS SELECT id, name FROM public.base GROUP BY id;
         CREATE VIEW public.on_grouped AS SELECT id FROM public.grouped;
         CREATE TABLE public.other (x int);
         INSERT INTO public.other VALUES (7);",
    );
    // The fixture really has the split pg_dump makes.
    let dump = pg.pg_dump("src", &["--schema-only"]);
    assert!(
        dump.contains("Name: grouped _RETURN; Type: RULE"),
        "pg_dump no longer splits the view:\n{dump}"
    );
    let s = Scratch::new();
    s.init();
    let id = s.json(&["create", &pg.url("src")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &pg.url("part"),
        "--include",
        "public.other",
    ]);
    assert!(out.contains("skipped: VIEW public.grouped"), "{out}");
    assert!(out.contains("skipped: VIEW public.on_grouped"), "{out}");
    assert_eq!(
        scalar(
            &pg,
            "part",
            "SELECT count(*) FROM pg_views WHERE schemaname = 'public'"
        ),
        "0"
    );
    assert_eq!(scalar(&pg, "part", "SELECT x FROM public.other"), "7");

    // A full restore still has the real view.
    s.ok(&["restore", &id, "--to", &pg.url("whole")]);
    assert_eq!(
        scalar(
            &pg,
            "whole",
            "SELECT string_agg(name, ',' ORDER BY id) FROM public.grouped"
        ),
        "one,two"
    );
}

/// What a database is, beyond its schema: locale provider and ICU
/// locale, owner, connection limit, settings, comment, grants, role
/// settings.
fn properties(pg: &PgCluster, db: &str) -> String {
    scalar(
        pg,
        "postgres",
        &format!(
            "SELECT concat_ws(' | ', d.datlocprovider, d.daticulocale, pg_get_userbyid(d.datdba),
                    d.datconnlimit, d.datistemplate, shobj_description(d.oid, 'pg_database'),
                    d.datacl::text,
                    (SELECT array_to_string(setconfig, ';') FROM pg_db_role_setting
                      WHERE setdatabase = d.oid AND setrole = 0),
                    (SELECT string_agg(pg_get_userbyid(setrole) || '=' || array_to_string(setconfig, ';'), ',')
                       FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole <> 0))
               FROM pg_database d WHERE d.datname = '{db}'"
        ),
    )
}

/// Item 4: a database the restore creates (new, or recreated in place by
/// `--drop`) gets the source database's properties, as `pg_dump
/// --create` would give it.
#[test]
fn r17_4_created_databases_keep_their_properties() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE ROLE app NOLOGIN; CREATE ROLE reader NOLOGIN;
         CREATE DATABASE props TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu
             ICU_LOCALE 'en-US-u-kn-true' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'
             OWNER app CONNECTION LIMIT 7;
         ALTER DATABASE props SET search_path TO app, \"Mixed Case\", public;
         ALTER DATABASE props SET work_mem = '7MB';
         COMMENT ON DATABASE props IS 'a ''quoted'' comment';
         REVOKE ALL ON DATABASE props FROM PUBLIC;
         GRANT CONNECT ON DATABASE props TO reader;
         GRANT TEMPORARY ON DATABASE props TO reader WITH GRANT OPTION;
         ALTER ROLE reader IN DATABASE props SET statement_timeout = '5s';",
    );
    pg.psql(
        "props",
        "CREATE TABLE public.v (s text); INSERT INTO public.v VALUES ('a10'), ('a9'), ('a2');",
    );
    let order = "SELECT string_agg(s, ',' ORDER BY s) FROM public.v";
    assert_eq!(scalar(&pg, "props", order), "a2,a9,a10");
    let want = properties(&pg, "props");
    assert!(want.starts_with("i | en-US-u-kn-true | app | 7"), "{want}");

    let s = Scratch::new();
    s.init();
    let v = s.json(&["create", &pg.url("props")]);
    let id = v["id"].as_str().unwrap().to_owned();
    let recorded = &v["snapshot"]["metadata"]["database_properties"];
    assert_eq!(recorded["locale_provider"], "icu", "{recorded}");

    s.ok(&["restore", &id, "--to", &pg.url("copy")]);
    assert_eq!(properties(&pg, "copy"), want.replace("props", "copy"));
    assert_eq!(scalar(&pg, "copy", order), "a2,a9,a10");

    // Recreated in place by --drop: the same.
    pg.psql(
        "postgres",
        "ALTER DATABASE copy RESET ALL; ALTER DATABASE copy OWNER TO postgres",
    );
    pg.psql("copy", "INSERT INTO public.v VALUES ('b')");
    s.ok(&["restore", &id, "--to", &pg.url("copy"), "--drop", "--yes"]);
    assert_eq!(properties(&pg, "copy"), want.replace("props", "copy"));
    assert_eq!(scalar(&pg, "copy", order), "a2,a9,a10");
}

const KINDS: &str = include_str!("postgres_kinds.sql");

/// A dump with what differs between any two dumps removed.
fn normalized(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.starts_with("-- Dumped from")
                && !l.starts_with("-- Dumped by")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Schema and data (lines sorted) of a database as `pg_dump` sees them.
fn dump(pg: &PgCluster, db: &str) -> (String, Vec<String>) {
    let schema = normalized(&pg.pg_dump(db, &["--schema-only"]));
    let mut data: Vec<String> = normalized(&pg.pg_dump(db, &["--data-only"]))
        .lines()
        .map(str::to_owned)
        .collect();
    data.sort();
    (schema, data)
}

fn assert_same(pg: &PgCluster, a: &str, b: &str) {
    let (sa, da) = dump(pg, a);
    let (sb, db) = dump(pg, b);
    if sa != sb {
        let diff: Vec<String> = sa
            .lines()
            .zip(sb.lines())
            .filter(|(x, y)| x != y)
            .take(20)
            .map(|(x, y)| format!("- {x}\n+ {y}"))
            .collect();
        panic!(
            "schemas of {a} and {b} differ ({} vs {} lines):\n{}",
            sa.lines().count(),
            sb.lines().count(),
            diff.join("\n")
        );
    }
    let diff: Vec<String> = da
        .iter()
        .zip(&db)
        .filter(|(x, y)| x != y)
        .take(10)
        .map(|(x, y)| format!("- {x}\n+ {y}"))
        .collect();
    assert!(
        diff.is_empty() && da.len() == db.len(),
        "data of {a} and {b} differs:\n{}",
        diff.join("\n")
    );
}

/// The fidelity suite over every object kind of the regression database:
/// a full restore matches `pg_dump` of the source, a selective restore
/// into a new database takes what its tables need, and a selective
/// `--drop` restore of a table that much depends on leaves the database
/// as it was.
#[test]
fn r17_every_object_kind_round_trips() {
    let pg = PgCluster::start();
    let space = pg.dir().join("kinds_space");
    std::fs::create_dir(&space).unwrap();
    if let Some(user) = pg.run_as() {
        let ok = std::process::Command::new("chown")
            .args([user, space.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE kinds_reader NOLOGIN; CREATE DATABASE kinds; CREATE TABLESPACE kinds_space LOCATION '{}'",
            space.display()
        ),
    );
    pg.psql("kinds", KINDS);
    let s = Scratch::new();
    s.init();
    let id = s.json(&["create", &pg.url("kinds")])["id"]
        .as_str()
        .unwrap()
        .to_owned();

    s.ok(&["restore", &id, "--to", &pg.url("copy")]);
    assert_same(&pg, "kinds", "copy");

    let out = s.json(&[
        "restore",
        &id,
        "--to",
        &pg.url("part"),
        "--include",
        "kinds.refs",
    ]);
    let skipped = out["report"]["details"]["skipped"].to_string();
    assert!(skipped.contains("refs_t_id_fkey"), "{skipped}");
    assert_eq!(scalar(&pg, "part", "SELECT count(*) FROM kinds.refs"), "11");

    // Replace the table most objects depend on, in place.
    pg.psql("copy", "DELETE FROM kinds.refs; DELETE FROM kinds.t;");
    s.ok(&[
        "restore",
        &id,
        "--to",
        &pg.url("copy"),
        "--include",
        "kinds.t",
        "--include",
        "kinds.refs",
        "--drop",
        "--yes",
    ]);
    assert_same(&pg, "kinds", "copy");
}
