// Package store is GreenFlow's one boundary to ClickHouse: the connection,
// versioned migrations from schemas/clickhouse, and every query the
// services and the CLI run, kept in one file per table so that the query
// work for scale happens in one place:
//
//	samples.go         meter samples: inserts, per-series window figures, role peaks, export, power over time
//	run_metrics.go     time series recorded during runs (load progress, Kafka signals, collector CPU)
//	runs.go            run records
//	experiments.go     experiment records
//	results.go         per-run results (and an experiment's, e.g. a capacity search's)
//	run_targets.go     the targets of each analysed run with their roles
//	config_results.go  per-configuration statistics across repetitions
//	migrate.go         migrations
//	rows.go            batches, row scanning and row versions shared by all
//
// Sample and run-metric writes are idempotent: both tables are
// ReplacingMergeTree keyed by what identifies a row (migration 0003), so a
// retried batch or a row rewritten after a take-over merges away. Merges
// are eventual; readers de-duplicate by the same keys. A migration can
// replace a table whose engine or key must change, keeping its rows (the
// `-- greenflow:replace-table` directive, see replaceTable).
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
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
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
	return open(ctx, dsn, logger, 0)
}

// open is Open applying the migrations up to version upTo (0: all).
func open(ctx context.Context, dsn string, logger *zap.Logger, upTo int) (*Store, error) {
	opts, db, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
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
	if err := s.migrateWithOwnConn(ctx, opts, upTo); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

// migrateWithOwnConn applies the migrations over a connection of their own
// whose read timeout allows a table copy (a replace-table migration) to
// take as long as the data needs; the regular pool keeps its short one.
func (s *Store) migrateWithOwnConn(ctx context.Context, opts *clickhouse.Options, upTo int) error {
	mopts := *opts
	mopts.ReadTimeout = migrationTimeout
	mopts.MaxOpenConns = 1
	mconn, err := clickhouse.Open(&mopts)
	if err != nil {
		return fmt.Errorf("open clickhouse database %s for migrations: %w", s.database, err)
	}
	defer mconn.Close()
	return s.migrate(ctx, mconn, upTo)
}

// migrationTimeout bounds one migration statement, a table copy included.
const migrationTimeout = time.Hour

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

// Conn exposes the driver to tests and test tools that check what is
// stored beyond the queries here (counting rows, merging parts). The
// services and the CLI query through this package's methods only.
func (s *Store) Conn() driver.Conn { return s.conn }

// Database is the database the store works in.
func (s *Store) Database() string { return s.database }

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// DropDatabase drops the database a DSN names, with everything in it.
// Tests that leave their data on a kept server (see testenv's
// GREENFLOW_TEST_CLICKHOUSE_DIR) drop what is theirs.
func DropDatabase(ctx context.Context, dsn string) error {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("parse clickhouse dsn %q: %w", redact(dsn), err)
	}
	db := opts.Auth.Database
	if !dbNameRE.MatchString(db) || db == "default" || db == "system" {
		return fmt.Errorf("drop database %q: not a database of its own", db)
	}
	opts.Auth.Database = "default"
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return fmt.Errorf("open clickhouse %s: %w", redact(dsn), err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}
