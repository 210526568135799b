//! The SQL, in one place: connect-pg-simple's table and queries on the configured schema and
//! table, and what the gate adds on request (the user index, the notify trigger). Names are
//! quoted as PostgreSQL quotes identifiers (`"` doubled), the user field as a string literal
//! (`'` doubled): both come from the operator's config, never from a request.

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The channel the trigger notifies: `sessiongate_<schema>_<table>`, or, when that is longer
/// than PostgreSQL's 63 bytes (`pg_notify` refuses longer ones, and a refused notify would
/// fail the delete), `sessiongate_` and a hash of the two.
fn channel(schema: &str, table: &str) -> String {
    let plain = format!("sessiongate_{schema}_{table}");
    if plain.len() <= 63 {
        return plain;
    }
    // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes().chain([0]).chain(table.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sessiongate_{h:016x}")
}

/// Every query the store sends, built once from the names.
#[derive(Debug, Clone)]
pub struct Names {
    pub schema: String,
    pub table: String,
    /// `"schema"."table"`.
    pub qualified: String,
    /// `(sess ->> 'user')`: the expression the user index is on, and that every per-user
    /// query uses as it is, so that the planner picks the index.
    pub user_expr: String,
    /// The channel the trigger notifies, and the gate listens to.
    pub channel: String,
    pub user_field: String,
}

impl Names {
    pub fn new(schema: &str, table: &str, user_field: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            qualified: format!("{}.{}", ident(schema), ident(table)),
            user_expr: format!("(sess ->> {})", literal(user_field)),
            channel: channel(schema, table),
            user_field: user_field.to_owned(),
        }
    }

    /// connect-pg-simple's `table.sql`, on this schema and table.
    pub fn create_table(&self) -> String {
        format!(
            "CREATE TABLE {t} (\n  \"sid\" varchar NOT NULL COLLATE \"default\",\n  \"sess\" json NOT NULL,\n  \"expire\" timestamp(6) NOT NULL\n)\nWITH (OIDS=FALSE);\n\
             ALTER TABLE {t} ADD CONSTRAINT {pkey} PRIMARY KEY (\"sid\") NOT DEFERRABLE INITIALLY IMMEDIATE;\n\
             CREATE INDEX {idx} ON {t} (\"expire\");",
            t = self.qualified,
            pkey = ident(&format!("{}_pkey", self.table)),
            idx = ident(&format!("IDX_{}_expire", self.table)),
        )
    }

    /// The expression index behind every per-user lookup.
    pub fn create_user_index(&self) -> String {
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {idx} ON {t} ({e})",
            idx = ident(&self.user_index_name()),
            t = self.qualified,
            e = self.user_expr,
        )
    }

    pub fn user_index_name(&self) -> String {
        format!("IDX_{}_user", self.table)
    }

    pub fn trigger_name(&self) -> &'static str {
        "sessiongate_notify"
    }

    fn trigger_function(&self) -> String {
        format!(
            "{}.{}",
            ident(&self.schema),
            ident(&format!("sessiongate_notify_{}", self.table))
        )
    }

    /// The trigger: the id of every row deleted, renamed or whose `sess` is rewritten goes to
    /// the channel (after commit). Touches (`expire` only) notify nobody.
    pub fn create_notify_trigger(&self) -> String {
        format!(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$\n\
             BEGIN\n  PERFORM pg_notify({c}, OLD.sid);\n  RETURN NULL;\nEND\n$$;\n\
             CREATE OR REPLACE TRIGGER {n} AFTER DELETE OR UPDATE OF sess, sid ON {t}\n  \
             FOR EACH ROW EXECUTE FUNCTION {f}();",
            f = self.trigger_function(),
            c = literal(&self.channel),
            n = ident(self.trigger_name()),
            t = self.qualified,
        )
    }

    /// Whether the trigger is on the table: `$1` the qualified table, `$2` its name.
    pub fn has_trigger(&self) -> &'static str {
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)"
    }

    /// `$1` the qualified table: whether it exists (connect-pg-simple's check).
    pub fn table_exists(&self) -> &'static str {
        "SELECT to_regclass($1) IS NOT NULL"
    }

    /// `$1` the table, `$2` the index name: whether the user index is valid; no row when it
    /// does not exist.
    pub fn user_index_valid(&self) -> &'static str {
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass($1) AND c.relname = $2"
    }

    /// The advisory lock key under which the table and the trigger are made.
    pub fn schema_lock_key(&self) -> String {
        format!("sessiongate schema {}", self.qualified)
    }

    /// `$1` sid, `$2` now (s): the record and when it expires (s since the epoch).
    pub fn get(&self) -> String {
        format!(
            "SELECT sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM {} \
             WHERE sid = $1 AND expire >= to_timestamp($2)",
            self.qualified
        )
    }

    /// `$1` sess, `$2` expire (s), `$3` sid: connect-pg-simple's upsert.
    pub fn set(&self) -> String {
        format!(
            "INSERT INTO {} (sess, expire, sid) SELECT $1::text::json, to_timestamp($2), $3 \
             ON CONFLICT (sid) DO UPDATE SET sess = $1::text::json, expire = to_timestamp($2) RETURNING sid",
            self.qualified
        )
    }

    /// `$1` expire (s), `$2` sid: connect-pg-simple's touch.
    pub fn touch(&self) -> String {
        format!(
            "UPDATE {} SET expire = to_timestamp($1) WHERE sid = $2 RETURNING sid",
            self.qualified
        )
    }

    /// `$1` sids, `$2` their new expiries (s): many touches in one statement.
    pub fn touch_many(&self) -> String {
        format!(
            "UPDATE {t} AS s SET expire = to_timestamp(v.e) \
             FROM unnest($1::text[], $2::float8[]) AS v(sid, e) WHERE s.sid = v.sid RETURNING s.sid",
            t = self.qualified
        )
    }

    /// `$1` sid.
    pub fn destroy(&self) -> String {
        format!("DELETE FROM {} WHERE sid = $1", self.qualified)
    }

    /// `$1` sid, `$2` the record it must still be: deletes an unreadable record without
    /// racing a writer that has just fixed it.
    pub fn destroy_if(&self) -> String {
        format!(
            "DELETE FROM {} WHERE sid = $1 AND sess::text = $2",
            self.qualified
        )
    }

    /// `$1` sid, `$2` now: the record, locked for an update.
    pub fn get_for_update(&self) -> String {
        format!(
            "SELECT sess::text FROM {} WHERE sid = $1 AND expire >= to_timestamp($2) FOR UPDATE",
            self.qualified
        )
    }

    /// `$1` sess, `$2` sid: rewrites the record, keeping its expiry.
    pub fn rewrite(&self) -> String {
        format!(
            "UPDATE {} SET sess = $1::text::json WHERE sid = $2",
            self.qualified
        )
    }

    /// `$1` old sid, `$2` new sid, `$3` now.
    pub fn rename(&self) -> String {
        format!(
            "UPDATE {} SET sid = $2 WHERE sid = $1 AND expire >= to_timestamp($3)",
            self.qualified
        )
    }

    /// `$1` user, `$2` now: the user's live sessions and when each expires.
    pub fn user_sessions(&self) -> String {
        format!(
            "SELECT sid::text, sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM {} \
             WHERE {} = $1 AND expire >= to_timestamp($2)",
            self.qualified, self.user_expr
        )
    }

    /// `$1` user: deletes every session of the user, expired or not.
    pub fn revoke(&self) -> String {
        format!(
            "DELETE FROM {} WHERE {} = $1 RETURNING sid::text",
            self.qualified, self.user_expr
        )
    }

    /// `$1` sids.
    pub fn destroy_many(&self) -> String {
        format!("DELETE FROM {} WHERE sid = ANY($1::text[])", self.qualified)
    }

    /// `$1` now.
    pub fn count(&self) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE expire >= to_timestamp($1)",
            self.qualified
        )
    }

    /// `$1` now: connect-pg-simple's prune.
    pub fn prune(&self) -> String {
        format!(
            "DELETE FROM {} WHERE expire < to_timestamp($1)",
            self.qualified
        )
    }

    /// `$1` a key: serialises logins of one user under `session.max_per_user`.
    pub fn lock_user(&self) -> &'static str {
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_as_postgres_quotes_them() {
        let n = Names::new("my\"schema", "se'ss", "us'er");
        assert_eq!(n.qualified, r#""my""schema"."se'ss""#);
        assert_eq!(n.user_expr, "(sess ->> 'us''er')");
        assert!(n.create_table().contains(r#""IDX_se'ss_expire""#));
    }

    #[test]
    fn the_channel_fits_postgres_names() {
        assert_eq!(
            Names::new("public", "session", "user").channel,
            "sessiongate_public_session"
        );
        let long = Names::new(&"s".repeat(63), &"t".repeat(63), "user").channel;
        assert!(
            long.len() <= 63 && long.starts_with("sessiongate_"),
            "{long}"
        );
        assert_ne!(
            long,
            Names::new(&"s".repeat(63), &"u".repeat(63), "user").channel
        );
    }

    #[test]
    fn the_default_table_is_connect_pg_simples() {
        let n = Names::new("public", "session", "user");
        let t = n.create_table();
        assert!(t.starts_with("CREATE TABLE \"public\".\"session\" (\n  \"sid\" varchar NOT NULL COLLATE \"default\",\n  \"sess\" json NOT NULL,\n  \"expire\" timestamp(6) NOT NULL\n)"), "{t}");
        assert!(t.contains("ADD CONSTRAINT \"session_pkey\" PRIMARY KEY (\"sid\")"));
        assert!(t.contains(
            "CREATE INDEX \"IDX_session_expire\" ON \"public\".\"session\" (\"expire\")"
        ));
    }
}
