// Package store is GreenFlow's ClickHouse access: connection, versioned
// migrations from schemas/clickhouse, batched inserts of samples and run
// metrics, and the queries the scheduler, analyzer and CLI need.
//
// Driver choice: clickhouse-go/v2 is pinned at v2.25.0. The only ClickHouse
// these machines can install is Debian's 18.16.1, and clickhouse-go v2.27 and
// later cannot batch-insert into it (they send `INSERT … FORMAT Native`,
// which 18.16 rejects); v2.25.0 speaks the native protocol to 18.16 and to
// current servers alike (checked by the store test suite, which runs against
// a real server). The schema avoids what 18.16 lacks: no DateTime64
// (timestamps are Int64 epoch milliseconds), no TTL, no window functions, no
// LowCardinality, and ReplacingMergeTree versions are unsigned integers.
// Parameters are bound client-side with `?`, which both generations accept.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/schemas"
)

// Store is safe for concurrent use.
type Store struct {
	conn     driver.Conn
	database string
	logger   *zap.Logger
}

var dbNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Open connects to ClickHouse at dsn (clickhouse://host:port/database),
// creates the database when missing and applies pending migrations.
func Open(ctx context.Context, dsn string, logger *zap.Logger) (*Store, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse clickhouse dsn %q: expected clickhouse://host:9000/database: %w", redact(dsn), err)
	}
	db := opts.Auth.Database
	if db == "" {
		db = "default"
	}
	if !dbNameRE.MatchString(db) {
		return nil, fmt.Errorf("clickhouse dsn: database name %q: expected letters, digits and _", db)
	}
	opts.DialTimeout = 5 * time.Second
	opts.ReadTimeout = 30 * time.Second
	opts.MaxOpenConns = 8
	// Bootstrap without a database so a missing one can be created.
	boot := *opts
	boot.Auth.Database = "default"
	bconn, err := clickhouse.Open(&boot)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", redact(dsn), err)
	}
	if err := pingRetry(ctx, bconn, 15*time.Second); err != nil {
		_ = bconn.Close()
		return nil, fmt.Errorf("connect to clickhouse %s: %w", redact(dsn), err)
	}
	if err := bconn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		_ = bconn.Close()
		return nil, fmt.Errorf("create database %s: %w", db, err)
	}
	_ = bconn.Close()
	opts.Auth.Database = db
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse database %s: %w", db, err)
	}
	s := &Store{conn: conn, database: db, logger: logger.With(zap.String("component", "store"))}
	if err := s.Migrate(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

func pingRetry(ctx context.Context, c driver.Conn, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := c.Ping(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

// Close closes the connection pool.
func (s *Store) Close() error { return s.conn.Close() }

// Conn exposes the driver for queries this package does not wrap.
func (s *Store) Conn() driver.Conn { return s.conn }

// Database is the database the store works in.
func (s *Store) Database() string { return s.database }

// Migration is one versioned file under schemas/clickhouse.
type Migration struct {
	Version    int
	Name       string
	Statements []string
	Checksum   string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(schemas.ClickHouse, "clickhouse")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: expected NNNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		if prev, ok := seen[v]; ok {
			return nil, fmt.Errorf("migration version %d used twice: %s and %s", v, prev, e.Name())
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(schemas.ClickHouse, "clickhouse/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: v, Name: m[2], Statements: splitStatements(string(b)), Checksum: hex.EncodeToString(sum[:8])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// splitStatements splits SQL text on semicolons that end a line, dropping
// comment-only lines.
func splitStatements(sql string) []string {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

// Migrate applies every embedded migration not yet recorded in
// schema_migrations. Statements are idempotent, so two services migrating at
// once both succeed; the version table is a ReplacingMergeTree read with
// DISTINCT, so a version recorded twice counts once. A migration whose file
// changed after it was applied is an error: changes get a new version.
func (s *Store) Migrate(ctx context.Context) error {
	if err := s.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version UInt32, name String, checksum String, applied_ms UInt64
	) ENGINE = ReplacingMergeTree(applied_ms) ORDER BY version`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	migs, err := Migrations()
	if err != nil {
		return err
	}
	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	for _, m := range migs {
		if sum, ok := applied[m.Version]; ok {
			if sum != m.Checksum {
				return fmt.Errorf("migration %04d_%s changed after it was applied (checksum %s, applied %s): add a new migration instead", m.Version, m.Name, m.Checksum, sum)
			}
			continue
		}
		for i, stmt := range m.Statements {
			if err := s.conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("apply migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := s.insertRow(ctx, "INSERT INTO schema_migrations (version, name, checksum, applied_ms)",
			uint32(m.Version), m.Name, m.Checksum, uint64(time.Now().UnixMilli())); err != nil {
			return fmt.Errorf("record migration %04d_%s: %w", m.Version, m.Name, err)
		}
		s.logger.Info("applied migration", zap.Int("version", m.Version), zap.String("name", m.Name))
	}
	return nil
}

func (s *Store) appliedMigrations(ctx context.Context) (map[int]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT version, checksum FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, fmt.Errorf("scan schema_migrations: %w", err)
		}
		out[int(v)] = sum
	}
	return out, rows.Err()
}

// AppliedVersions lists the recorded migration versions, ascending.
func (s *Store) AppliedVersions(ctx context.Context) ([]int, error) {
	m, err := s.appliedMigrations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(m))
	for v := range m {
		out = append(out, v)
	}
	sort.Ints(out)
	return out, nil
}

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")
