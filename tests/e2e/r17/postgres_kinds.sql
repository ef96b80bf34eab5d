-- Every kind of object PostgreSQL's regression database leaves behind,
-- in a schema of its own (pg_regress itself does not fit the CI budget):
-- extensions and their members, base/shell/enum/composite/range/
-- multirange types, domains, collations, conversions, functions in SQL
-- (with SQL-standard bodies), plpgsql and internal languages, procedures,
-- aggregates (moving, ordered-set), operators, operator classes and
-- families, casts, access methods, text search objects, foreign data
-- wrappers, servers, user mappings, foreign tables, tables of every
-- shape (identity, generated, typed, unlogged, inheritance with several
-- parents, list/hash/range partitions with sub-partitions and defaults,
-- another table access method), constraints (exclusion, deferrable,
-- NOT VALID, FK with column lists), indexes (partial, expression,
-- covering, gin, gist, brin, hash, spgist, NULLS NOT DISTINCT,
-- clustered), views (recursive, security barrier with check option, one
-- pg_dump splits into a placeholder and a rule, with INSTEAD OF
-- triggers), materialized views, rules, triggers (row with WHEN,
-- statement with transition tables, constraint triggers), event
-- triggers, row level security and policies, publications, a
-- subscription, statistics objects, sequences with every option,
-- comments, column and default privileges, large objects, a table and
-- an index in a tablespace, an index access method, a procedural
-- language.
-- Loaded by tests/e2e/r17/postgres.rs as a superuser; role kinds_reader
-- and tablespace kinds_space exist in the cluster. (Security labels need
-- a label provider module and transforms a language with one; neither
-- ships with PostgreSQL.)

CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE EXTENSION btree_gist;
CREATE EXTENSION pg_trgm;
CREATE EXTENSION file_fdw;
CREATE EXTENSION postgres_fdw;

CREATE SCHEMA kinds;
COMMENT ON SCHEMA kinds IS 'object kinds';

-- Types.
CREATE TYPE kinds.myint;
CREATE FUNCTION kinds.myint_in(cstring) RETURNS kinds.myint LANGUAGE internal IMMUTABLE STRICT AS 'int4in';
CREATE FUNCTION kinds.myint_out(kinds.myint) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'int4out';
CREATE TYPE kinds.myint (INPUT = kinds.myint_in, OUTPUT = kinds.myint_out, LIKE = int4);
CREATE TYPE kinds.color AS ENUM ('red', 'green', 'blue');
ALTER TYPE kinds.color ADD VALUE 'cyan' BEFORE 'green';
CREATE TYPE kinds.pair AS (a int, b text);
CREATE TYPE kinds.numr AS RANGE (subtype = numeric);
CREATE DOMAIN kinds.email AS citext DEFAULT 'nobody@example.com' NOT NULL
    CONSTRAINT has_at CHECK (VALUE ~ '@');
COMMENT ON TYPE kinds.color IS 'an enum';

-- Collations and conversions.
CREATE COLLATION kinds.phonebook (provider = icu, locale = 'de-u-co-phonebk');
CREATE COLLATION kinds.c_copy FROM "C";
CREATE CONVERSION kinds.latin1_utf8 FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;

-- Functions, procedures, aggregates.
CREATE FUNCTION kinds.add(a int, b int DEFAULT 1) RETURNS int
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN a + b;
CREATE FUNCTION kinds.three() RETURNS SETOF int LANGUAGE sql ROWS 3
    AS 'SELECT generate_series(1, 3)';
CREATE FUNCTION kinds.who() RETURNS text LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog AS $$ BEGIN RETURN current_user; END $$;
CREATE PROCEDURE kinds.noop(INOUT x int) LANGUAGE plpgsql AS $$ BEGIN x := x; END $$;
CREATE AGGREGATE kinds.mysum(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0',
    MSFUNC = int4pl, MINVFUNC = int4mi, MSTYPE = int);
CREATE AGGREGATE kinds.my_pct(float8 ORDER BY anyelement) (SFUNC = ordered_set_transition,
    STYPE = internal, FINALFUNC = percentile_disc_final, FINALFUNC_EXTRA);

-- Operators, operator classes and families, casts.
CREATE FUNCTION kinds.myint_eq(kinds.myint, kinds.myint) RETURNS bool LANGUAGE internal IMMUTABLE STRICT AS 'int4eq';
CREATE FUNCTION kinds.myint_lt(kinds.myint, kinds.myint) RETURNS bool LANGUAGE internal IMMUTABLE STRICT AS 'int4lt';
CREATE FUNCTION kinds.myint_cmp(kinds.myint, kinds.myint) RETURNS int LANGUAGE internal IMMUTABLE STRICT AS 'btint4cmp';
CREATE OPERATOR kinds.= (LEFTARG = kinds.myint, RIGHTARG = kinds.myint, FUNCTION = kinds.myint_eq,
    COMMUTATOR = OPERATOR(kinds.=), RESTRICT = eqsel, JOIN = eqjoinsel, MERGES);
CREATE OPERATOR kinds.< (LEFTARG = kinds.myint, RIGHTARG = kinds.myint, FUNCTION = kinds.myint_lt,
    RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR FAMILY kinds.myint_fam USING btree;
CREATE OPERATOR CLASS kinds.myint_ops DEFAULT FOR TYPE kinds.myint USING btree FAMILY kinds.myint_fam AS
    OPERATOR 1 kinds.<, OPERATOR 3 kinds.=, FUNCTION 1 kinds.myint_cmp(kinds.myint, kinds.myint);
CREATE CAST (kinds.myint AS int4) WITHOUT FUNCTION;
CREATE CAST (kinds.pair AS text) WITH INOUT AS ASSIGNMENT;

-- Access methods and a procedural language of their own.
CREATE ACCESS METHOD kinds_heap TYPE TABLE HANDLER heap_tableam_handler;
CREATE ACCESS METHOD kinds_btree TYPE INDEX HANDLER bthandler;
CREATE OPERATOR CLASS kinds.int4_kinds_ops DEFAULT FOR TYPE int4 USING kinds_btree AS
    OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
    FUNCTION 1 btint4cmp(int4, int4);
CREATE FUNCTION kinds.lang_handler() RETURNS language_handler LANGUAGE c
    AS '$libdir/plpgsql', 'plpgsql_call_handler';
CREATE FUNCTION kinds.lang_validator(oid) RETURNS void LANGUAGE c STRICT
    AS '$libdir/plpgsql', 'plpgsql_validator';
CREATE LANGUAGE kinds_lang HANDLER kinds.lang_handler VALIDATOR kinds.lang_validator;
CREATE FUNCTION kinds.in_own_language() RETURNS int LANGUAGE kinds_lang AS $$ BEGIN RETURN 1; END $$;

-- Text search.
CREATE TEXT SEARCH PARSER kinds.prs (START = prsd_start, GETTOKEN = prsd_nexttoken,
    END = prsd_end, LEXTYPES = prsd_lextype, HEADLINE = prsd_headline);
CREATE TEXT SEARCH TEMPLATE kinds.tmpl (INIT = dsimple_init, LEXIZE = dsimple_lexize);
CREATE TEXT SEARCH DICTIONARY kinds.dict (TEMPLATE = kinds.tmpl, STOPWORDS = english);
CREATE TEXT SEARCH CONFIGURATION kinds.cfg (PARSER = kinds.prs);
ALTER TEXT SEARCH CONFIGURATION kinds.cfg ADD MAPPING FOR word, asciiword WITH kinds.dict;

-- Foreign data.
CREATE FOREIGN DATA WRAPPER kinds_fdw;
CREATE SERVER kinds_files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE kinds.ft (line text) SERVER kinds_files OPTIONS (filename '/dev/null');
CREATE SERVER kinds_remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'localhost', dbname 'nowhere');
CREATE USER MAPPING FOR postgres SERVER kinds_remote OPTIONS (user 'someone', password 'secret');
CREATE USER MAPPING FOR PUBLIC SERVER kinds_remote;

-- Tables.
CREATE SEQUENCE kinds.seq AS smallint INCREMENT -1 MINVALUE -100 MAXVALUE 100 START 5 CYCLE CACHE 3;
SELECT nextval('kinds.seq') FROM generate_series(1, 4);
CREATE TABLE kinds.t (
    id int GENERATED BY DEFAULT AS IDENTITY (START WITH 10 INCREMENT BY 2) PRIMARY KEY,
    mi kinds.myint,
    c kinds.color,
    p kinds.pair,
    r kinds.numr,
    mr kinds.numr_multirange,
    e kinds.email,
    h hstore,
    name text COLLATE kinds.phonebook,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('kinds.cfg', coalesce(name, ''))) STORED,
    js jsonb,
    x xml,
    grid int[][],
    during tstzrange,
    s smallint DEFAULT nextval('kinds.seq'),
    CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&),
    CONSTRAINT name_unique UNIQUE NULLS NOT DISTINCT (name) DEFERRABLE INITIALLY DEFERRED
) WITH (fillfactor = 80, autovacuum_enabled = false);
ALTER TABLE kinds.t ALTER COLUMN js SET STATISTICS 500;
ALTER TABLE kinds.t ALTER COLUMN x SET STORAGE EXTERNAL;
ALTER TABLE kinds.t ADD CONSTRAINT id_positive CHECK (id > 0) NOT VALID;
ALTER TABLE kinds.t REPLICA IDENTITY FULL;
COMMENT ON COLUMN kinds.t.e IS 'a domain over an extension type';
INSERT INTO kinds.t (mi, c, p, r, mr, e, h, name, js, x, grid, during)
SELECT i::text::kinds.myint, (ARRAY['red', 'cyan', 'green', 'blue'])[1 + i % 4]::kinds.color,
       ROW(i, 'p' || i)::kinds.pair, kinds.numr(i, i + 1.5), kinds.numr_multirange(kinds.numr(i, i + 1), kinds.numr(i + 2, i + 3)),
       'user' || i || '@example.com', hstore('k', i::text), CASE WHEN i % 5 = 0 THEN NULL ELSE 'Müller ' || i END,
       jsonb_build_object('i', i), xmlelement(name row, i), ARRAY[[i, i + 1], [i + 2, i + 3]],
       tstzrange('2024-01-01'::timestamptz + i * interval '1 day', '2024-01-01'::timestamptz + (i + 1) * interval '1 day')
FROM generate_series(1, 40) i WHERE i % 5 <> 0 OR i = 5;
CREATE TABLE kinds.refs (
    id int PRIMARY KEY,
    t_id int,
    other int,
    FOREIGN KEY (t_id) REFERENCES kinds.t (id) ON DELETE SET NULL (t_id) DEFERRABLE
);
INSERT INTO kinds.refs SELECT i, 10 + 2 * i, i FROM generate_series(0, 10) i;
ALTER TABLE kinds.refs ADD CONSTRAINT other_fk FOREIGN KEY (other) REFERENCES kinds.refs (id) NOT VALID;
CREATE TABLE kinds.t_am (x int) USING kinds_heap;
INSERT INTO kinds.t_am VALUES (1), (2);
CREATE UNLOGGED TABLE kinds.u (x int);
INSERT INTO kinds.u VALUES (7);
CREATE TABLE kinds.typed OF kinds.pair (PRIMARY KEY (a));
INSERT INTO kinds.typed VALUES (1, 'one');
CREATE TABLE kinds.p1 (a int);
CREATE TABLE kinds.p2 (b int);
CREATE TABLE kinds.child (c int) INHERITS (kinds.p1, kinds.p2);
INSERT INTO kinds.child VALUES (1, 2, 3);
INSERT INTO kinds.p1 VALUES (4);
CREATE TABLE kinds.plist (k text, v int) PARTITION BY LIST (k);
CREATE TABLE kinds.plist_a PARTITION OF kinds.plist FOR VALUES IN ('a');
CREATE TABLE kinds.plist_rest PARTITION OF kinds.plist DEFAULT PARTITION BY HASH (v);
CREATE TABLE kinds.plist_rest_0 PARTITION OF kinds.plist_rest FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE kinds.plist_rest_1 PARTITION OF kinds.plist_rest FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO kinds.plist SELECT (ARRAY['a', 'b', 'c'])[1 + i % 3], i FROM generate_series(1, 30) i;
CREATE TABLE kinds.prange (d date NOT NULL, v int) PARTITION BY RANGE (d);
CREATE TABLE kinds.prange_2024 PARTITION OF kinds.prange FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE kinds.prange_old (d date NOT NULL, v int);
ALTER TABLE kinds.prange ATTACH PARTITION kinds.prange_old FOR VALUES FROM (MINVALUE) TO ('2024-01-01');
INSERT INTO kinds.prange VALUES ('2023-05-05', 1), ('2024-05-05', 2);
CREATE INDEX prange_v ON kinds.prange (v);

-- A tablespace (created by the test, which knows a directory for it).
CREATE TABLE kinds.spaced (x int) TABLESPACE kinds_space;
CREATE INDEX spaced_x ON kinds.spaced (x) TABLESPACE kinds_space;
INSERT INTO kinds.spaced VALUES (1), (2), (3);

-- Indexes.
CREATE INDEX t_partial ON kinds.t (c) WHERE c <> 'red';
CREATE INDEX t_expr ON kinds.t ((lower(name)));
CREATE INDEX t_cover ON kinds.t (mi) INCLUDE (name);
CREATE INDEX t_gin ON kinds.t USING gin (js jsonb_path_ops);
CREATE INDEX t_trgm ON kinds.t USING gist (name gist_trgm_ops);
CREATE INDEX t_brin ON kinds.t USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX t_hash ON kinds.t USING hash (h);
CREATE INDEX t_spgist ON kinds.t USING spgist (r);
CREATE INDEX t_tsv ON kinds.t USING gin (tsv);
CREATE INDEX t_name_c ON kinds.t (name COLLATE "C" text_pattern_ops);
ALTER TABLE kinds.t CLUSTER ON t_cover;

-- Views, materialized views, rules.
CREATE RECURSIVE VIEW kinds.nums (n) AS VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 5;
CREATE VIEW kinds.v_check WITH (security_barrier) AS
    SELECT id, c FROM kinds.t WHERE id > 0 WITH CASCADED CHECK OPTION;
CREATE VIEW kinds.grouped AS SELECT id, name FROM kinds.t GROUP BY id;
CREATE VIEW kinds.simple AS SELECT x FROM kinds.u;
CREATE MATERIALIZED VIEW kinds.mv AS SELECT c, count(*) AS n FROM kinds.t GROUP BY c;
CREATE UNIQUE INDEX mv_c ON kinds.mv (c);
CREATE TABLE kinds.log (msg text);
CREATE RULE log_u AS ON INSERT TO kinds.u DO ALSO INSERT INTO kinds.log VALUES ('u ' || NEW.x);
INSERT INTO kinds.u VALUES (8);

-- Triggers and event triggers.
CREATE FUNCTION kinds.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE FUNCTION kinds.trg_stmt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER t_row BEFORE UPDATE ON kinds.t FOR EACH ROW
    WHEN (OLD.c IS DISTINCT FROM NEW.c) EXECUTE FUNCTION kinds.trg();
CREATE CONSTRAINT TRIGGER t_con AFTER INSERT ON kinds.t DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION kinds.trg();
CREATE TRIGGER log_tt AFTER INSERT ON kinds.log REFERENCING NEW TABLE AS newrows
    FOR EACH STATEMENT EXECUTE FUNCTION kinds.trg_stmt();
CREATE TRIGGER simple_ins INSTEAD OF INSERT ON kinds.simple FOR EACH ROW EXECUTE FUNCTION kinds.trg();
ALTER TABLE kinds.t DISABLE TRIGGER t_row;
CREATE FUNCTION kinds.evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER kinds_evt ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION kinds.evt();

-- Row level security, privileges.
ALTER TABLE kinds.refs ENABLE ROW LEVEL SECURITY;
ALTER TABLE kinds.refs FORCE ROW LEVEL SECURITY;
CREATE POLICY refs_read ON kinds.refs FOR SELECT TO kinds_reader USING (id < 5);
CREATE POLICY refs_all ON kinds.refs AS RESTRICTIVE USING (true) WITH CHECK (id >= 0);
GRANT USAGE ON SCHEMA kinds TO kinds_reader;
GRANT SELECT (id, c), UPDATE (name) ON kinds.t TO kinds_reader;
GRANT EXECUTE ON FUNCTION kinds.add(int, int) TO kinds_reader;
REVOKE EXECUTE ON FUNCTION kinds.who() FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA kinds GRANT SELECT ON TABLES TO kinds_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- Publications, a subscription, statistics.
CREATE PUBLICATION kinds_pub FOR TABLE kinds.t (id, c) WHERE (id > 10), kinds.log WITH (publish = 'insert');
CREATE PUBLICATION kinds_schema FOR TABLES IN SCHEMA kinds;
CREATE SUBSCRIPTION kinds_sub CONNECTION 'dbname=nowhere' PUBLICATION elsewhere
    WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE);
CREATE STATISTICS kinds.t_stats (dependencies, ndistinct, mcv) ON id, c FROM kinds.t;

-- Large objects with a comment and privileges.
SELECT lo_from_bytea(424242, '\x6b696e6473'::bytea);
COMMENT ON LARGE OBJECT 424242 IS 'a large object';
GRANT SELECT ON LARGE OBJECT 424242 TO kinds_reader;
