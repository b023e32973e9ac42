// migrations.cpp — the control-plane schema, one numbered step at a time. Never edit a step that
// has shipped; add the next number. Applied at start-up under an advisory lock, so several nodes
// sharing one database migrate it once.
#include "admin/pg_client.h"

namespace postern::admin {

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> m = {
      {1, R"SQL(
CREATE TABLE settings (
  key        text PRIMARY KEY,
  value      jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE certificates (
  name        text PRIMARY KEY,
  kind        text NOT NULL CHECK (kind IN ('csr', 'self-signed', 'imported')),
  status      text NOT NULL CHECK (status IN ('requested', 'unused', 'in use')),
  cert_pem    text,
  chain_pem   text,
  key_pem     text,
  csr_pem     text,
  fingerprint text,
  not_before  timestamptz,
  not_after   timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE role_bindings (
  role       text PRIMARY KEY CHECK (role IN ('inbound_mta', 'outbound_mta', 'admin_console', 'euq_console')),
  cert_name  text NOT NULL REFERENCES certificates(name),
  generation bigint NOT NULL DEFAULT 1,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE licenses (
  product         text PRIMARY KEY,
  activation_code text,
  expires_on      date,
  state           text NOT NULL DEFAULT 'not activated',
  last_check      timestamptz,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE pattern_state (
  engine       text PRIMARY KEY,
  version      text,
  signature_ok boolean,
  installed_at timestamptz,
  last_update  timestamptz,
  last_error   text
);
CREATE TABLE events (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  node        text NOT NULL,
  code        text NOT NULL,
  severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
  text        text NOT NULL,
  queue_id    text,
  alert       boolean NOT NULL DEFAULT false,
  resolved_at timestamptz
);
CREATE INDEX events_at ON events (at DESC);
CREATE INDEX events_open_alerts ON events (code) WHERE alert AND resolved_at IS NULL;
CREATE TABLE quarantine (
  id          bigserial PRIMARY KEY,
  node        text NOT NULL,
  queue_id    text NOT NULL,
  recipient   text NOT NULL,
  sender      text NOT NULL,
  subject     text,
  reason      text NOT NULL,
  size        bigint NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  released_at timestamptz,
  deleted_at  timestamptz
);
CREATE INDEX quarantine_recipient ON quarantine (recipient) WHERE released_at IS NULL AND deleted_at IS NULL;
)SQL"},
      // Step 2 (certstore, issue 10): the certificate store. Entries gain their metadata and the
      // kind 'file'; key_pem holds the key sealed under the node key ("pk1:..."). role_bindings
      // changes from one row per role to one per (role, key type, SNI name), with the file the
      // config named when it was assigned. Touches only the step-1 certificate tables.
      {2, R"SQL(
ALTER TABLE certificates DROP CONSTRAINT IF EXISTS certificates_kind_check;
ALTER TABLE certificates ADD CONSTRAINT certificates_kind_check
  CHECK (kind IN ('csr', 'self-signed', 'imported', 'file'));
ALTER TABLE certificates
  ADD COLUMN subject     text,
  ADD COLUMN issuer      text,
  ADD COLUMN serial      text,
  ADD COLUMN sans        jsonb NOT NULL DEFAULT '[]',
  ADD COLUMN key_type    text,
  ADD COLUMN key_bits    integer,
  ADD COLUMN spki_sha256 text,
  ADD COLUMN chain_ok    boolean,
  ADD COLUMN chain_error text,
  ADD COLUMN key_matches boolean,
  ADD COLUMN fields      jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN file_path   text,
  ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN certificates.key_pem IS 'the private key, AES-256-GCM sealed under the node key (pk1:...)';
CREATE INDEX certificates_requested_spki ON certificates (spki_sha256) WHERE cert_pem IS NULL;
ALTER TABLE role_bindings DROP CONSTRAINT IF EXISTS role_bindings_pkey;
ALTER TABLE role_bindings DROP CONSTRAINT IF EXISTS role_bindings_cert_name_fkey;
ALTER TABLE role_bindings
  ADD COLUMN key_type  text NOT NULL DEFAULT '',
  ADD COLUMN sni       text NOT NULL DEFAULT '',
  ADD COLUMN file_path text NOT NULL DEFAULT '';
ALTER TABLE role_bindings ADD PRIMARY KEY (role, key_type, sni);
ALTER TABLE role_bindings ADD CONSTRAINT role_bindings_cert_name_fkey
  FOREIGN KEY (cert_name) REFERENCES certificates(name) ON UPDATE CASCADE;
)SQL"},
      // Licensing (issue 11): the signed record is the authority; the other columns are copies
      // for people reading the table. Touches only licensing's own tables.
      {3, R"SQL(
ALTER TABLE licenses ADD COLUMN IF NOT EXISTS record text;
ALTER TABLE licenses ADD COLUMN IF NOT EXISTS next_check timestamptz;
ALTER TABLE licenses ADD COLUMN IF NOT EXISTS source text;
CREATE TABLE IF NOT EXISTS license_meta (
  key        text PRIMARY KEY,
  value      text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
)SQL"},
      // The scanning gate (issue 12): one row per quarantined message, the index of the spool's
      // quarantine area (the files are the record). Step 1's per-recipient table was never
      // written; it is replaced.
      {4, R"SQL(
DROP TABLE IF EXISTS quarantine;
CREATE TABLE quarantine (
  queue_id    text NOT NULL,
  node        text NOT NULL,
  received_at timestamptz NOT NULL,
  sender      text NOT NULL,
  recipients  jsonb NOT NULL,
  subject     text,
  signature   text NOT NULL,
  size        bigint NOT NULL,
  state       text NOT NULL DEFAULT 'quarantined' CHECK (state IN ('quarantined', 'released', 'deleted')),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (node, queue_id)
);
CREATE INDEX quarantine_state ON quarantine (state, received_at);
)SQL"},
      // The EUQ console (issue 13): the install's link-signing key shared by the nodes, and the
      // nonces of links already used (single use; kept until they expire).
      {5, R"SQL(
CREATE TABLE IF NOT EXISTS euq_meta (
  key        text PRIMARY KEY,
  value      text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS euq_used_links (
  nonce      text PRIMARY KEY,
  purpose    text NOT NULL,
  recipient  text NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at    timestamptz NOT NULL DEFAULT now(),
  node       text NOT NULL
);
CREATE INDEX IF NOT EXISTS euq_used_links_expires ON euq_used_links (expires_at);
)SQL"},
  };
  return m;
}

}  // namespace postern::admin
