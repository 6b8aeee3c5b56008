package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/schemas"
)

// Migration is one versioned file under schemas/clickhouse.
type Migration struct {
	Version    int
	Name       string
	Statements []Statement
	Checksum   string
}

// Statement is one statement of a migration.
type Statement struct {
	SQL string
	// ReplaceTable, set by a `-- greenflow:replace-table <table>` line
	// before a CREATE TABLE, names the table the created one replaces,
	// keeping its rows (see replaceTable).
	ReplaceTable string
}

var (
	migrationName    = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)
	replaceDirective = regexp.MustCompile(`^--\s*greenflow:replace-table\s+([A-Za-z_][A-Za-z0-9_]*)\s*$`)
	createTableName  = regexp.MustCompile(`(?is)^\s*CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(`)
)

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
		stmts, err := splitStatements(string(b))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: v, Name: m[2], Statements: stmts, Checksum: hex.EncodeToString(sum[:8])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// splitStatements splits SQL text on semicolons that end a line, dropping
// comment-only lines; a replace-table directive attaches to the statement
// after it, which must then be a CREATE TABLE IF NOT EXISTS of a
// ReplacingMergeTree (copying rows twice must be harmless).
func splitStatements(sql string) ([]Statement, error) {
	var stmts []Statement
	var cur strings.Builder
	replace, replaceLine := "", 0
	end := func() error {
		st := Statement{SQL: strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"), ReplaceTable: replace}
		cur.Reset()
		if st.SQL == "" {
			return nil
		}
		if replace != "" {
			m := createTableName.FindStringSubmatch(st.SQL)
			switch {
			case m == nil:
				return fmt.Errorf("line %d: greenflow:replace-table %s: expected CREATE TABLE IF NOT EXISTS <new table> (…) next", replaceLine, replace)
			case m[1] == replace:
				return fmt.Errorf("line %d: greenflow:replace-table %s: the new table needs a name of its own", replaceLine, replace)
			case !strings.Contains(st.SQL, "ReplacingMergeTree"):
				return fmt.Errorf("line %d: greenflow:replace-table %s: expected a ReplacingMergeTree (concurrent migrations may copy the rows twice)", replaceLine, replace)
			}
		}
		stmts = append(stmts, st)
		replace = ""
		return nil
	}
	for i, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if m := replaceDirective.FindStringSubmatch(t); m != nil {
			if strings.TrimSpace(cur.String()) != "" || replace != "" {
				return nil, fmt.Errorf("line %d: greenflow:replace-table must precede a statement", i+1)
			}
			replace, replaceLine = m[1], i+1
			continue
		}
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			if err := end(); err != nil {
				return nil, err
			}
		}
	}
	if err := end(); err != nil {
		return nil, err
	}
	if replace != "" {
		return nil, fmt.Errorf("line %d: greenflow:replace-table %s: no statement follows", replaceLine, replace)
	}
	return stmts, nil
}

// Migrate applies every embedded migration not yet recorded in
// schema_migrations. Statements are idempotent, so two services migrating at
// once both succeed; the version table is a ReplacingMergeTree read with
// DISTINCT, so a version recorded twice counts once. A migration whose file
// changed after it was applied is an error: changes get a new version.
// Table copies of replace-table migrations run under the pool's read
// timeout here; Open uses a connection without that bound.
func (s *Store) Migrate(ctx context.Context) error { return s.migrate(ctx, s.conn, 0) }

// migrate applies the migrations up to version upTo (0: all) over conn.
func (s *Store) migrate(ctx context.Context, conn driver.Conn, upTo int) error {
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
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
		if upTo > 0 && m.Version > upTo {
			break
		}
		if sum, ok := applied[m.Version]; ok {
			if sum != m.Checksum {
				return fmt.Errorf("migration %04d_%s changed after it was applied (checksum %s, applied %s): add a new migration instead", m.Version, m.Name, m.Checksum, sum)
			}
			continue
		}
		for i, st := range m.Statements {
			var err error
			if st.ReplaceTable != "" {
				err = s.replaceTable(ctx, conn, m.Version, st)
			} else {
				err = conn.Exec(ctx, st.SQL)
			}
			if err != nil {
				return fmt.Errorf("apply migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := insertRow(ctx, conn, fmt.Sprintf("record migration %04d_%s", m.Version, m.Name),
			"INSERT INTO schema_migrations (version, name, checksum, applied_ms)",
			uint32(m.Version), m.Name, m.Checksum, uint64(time.Now().UnixMilli())); err != nil {
			return err
		}
		s.logger.Info("applied migration", zap.Int("version", m.Version), zap.String("name", m.Name))
	}
	return nil
}

// replaceTable replaces table st.ReplaceTable by the one st creates,
// keeping the rows, so that an engine or key can change on ClickHouse 18.16
// (which cannot alter either):
//
//  1. unless the old table was already kept aside (<table>_before_<version>
//     exists), create the new table and swap the names in one RENAME — of
//     several services migrating at once exactly one swap succeeds, since the
//     kept name then exists; a failed swap is fine when another did it;
//  2. drop a new table a concurrent migrator created after the swap;
//  3. copy every row of the kept table into the new one. Every migrator
//     copies, and one restarted after a crash copies again: the new table is
//     a ReplacingMergeTree, so copies collapse, and no crash leaves rows
//     uncopied. Rows written to the old name just before the swap are in the
//     kept table, so they are copied too, and so are rows an insert in
//     flight at the swap writes there after the copy: the copy is repeated
//     until the kept table stays still (replaceSettle).
//
// The kept table stays, for an operator to drop once satisfied.
func (s *Store) replaceTable(ctx context.Context, conn driver.Conn, version int, st Statement) error {
	table := st.ReplaceTable
	m := createTableName.FindStringSubmatch(st.SQL)
	if m == nil {
		return fmt.Errorf("replace table %s: statement is not a CREATE TABLE IF NOT EXISTS", table)
	}
	next, kept := m[1], fmt.Sprintf("%s_before_%04d", table, version)
	done, err := tableExists(ctx, conn, kept)
	if err != nil {
		return err
	}
	if !done {
		if err := conn.Exec(ctx, st.SQL); err != nil {
			return fmt.Errorf("create %s: %w", next, err)
		}
		if err := conn.Exec(ctx, fmt.Sprintf("RENAME TABLE %s TO %s, %s TO %s", table, kept, next, table)); err != nil {
			if ok, xerr := tableExists(ctx, conn, kept); xerr != nil || !ok {
				return fmt.Errorf("swap %s for %s: %w", table, next, err)
			}
			// Another service swapped them first.
		} else {
			s.logger.Info("table replaced; copying its rows", zap.String("table", table), zap.String("kept_as", kept))
		}
	}
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+next); err != nil {
		return fmt.Errorf("drop leftover %s: %w", next, err)
	}
	cols, err := commonColumns(ctx, conn, table, kept)
	if err != nil {
		return err
	}
	list := strings.Join(cols, ", ")
	start := time.Now()
	copyRows := func() (uint64, error) {
		before, err := countRows(ctx, conn, kept)
		if err != nil {
			return 0, err
		}
		if err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s", table, list, list, kept)); err != nil {
			return 0, fmt.Errorf("copy rows of %s into the new %s: %w", kept, table, err)
		}
		return before, nil
	}
	copied, err := copyRows()
	if err != nil {
		return err
	}
	// An insert that resolved the old name before the swap writes into the
	// kept table, possibly after the copy above read it (seen on 18.16 with
	// a service writing during the migration: an acknowledged row was
	// missing). Copy again until the kept table stays still for
	// replaceSettle. A kept table empty before and after its copy (a fresh
	// database, where nothing writes before its services have migrated)
	// is not waited for.
	for round := 1; ; round++ {
		if copied == 0 {
			n, err := countRows(ctx, conn, kept)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(replaceSettle):
		}
		n, err := countRows(ctx, conn, kept)
		if err != nil {
			return err
		}
		if n == copied {
			break
		}
		if round == replaceRounds {
			return fmt.Errorf("copy rows of %s into the new %s: the kept table is still being written to after %d copies (%d rows, was %d)", kept, table, round, n, copied)
		}
		s.logger.Info("rows arrived in the kept table after its copy; copying again", zap.String("table", kept), zap.Uint64("rows", n), zap.Uint64("copied", copied))
		if copied, err = copyRows(); err != nil {
			return err
		}
	}
	s.logger.Info("rows copied into replaced table", zap.String("table", table), zap.String("from", kept), zap.Duration("took", time.Since(start)))
	return nil
}

// replaceSettle is how long a kept table must stay unchanged after its copy
// (an insert in flight at the swap lands within it); replaceRounds bounds the
// copies.
const (
	replaceSettle = 2 * time.Second
	replaceRounds = 10
)

func countRows(ctx context.Context, conn driver.Conn, table string) (uint64, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of %s: %w", table, err)
	}
	return n, nil
}

// tableExists asks for the one table by name. It does not read
// system.tables: on ClickHouse 18.16 a scan of system.tables (or
// system.columns) fails with "Table … doesn't exist" when a concurrent
// migrator drops a table during the scan, which made concurrent starts fail.
func tableExists(ctx context.Context, conn driver.Conn, name string) (bool, error) {
	var n uint8
	if err := conn.QueryRow(ctx, "EXISTS TABLE "+name).Scan(&n); err != nil {
		return false, fmt.Errorf("look up table %s: %w", name, err)
	}
	return n > 0, nil
}

// commonColumns lists the columns of table that from has too, in table's
// order. It describes the two tables by name (see tableExists for why it
// does not read system.columns).
func commonColumns(ctx context.Context, conn driver.Conn, table, from string) ([]string, error) {
	target, err := columnsOf(ctx, conn, table)
	if err != nil {
		return nil, err
	}
	fromCols, err := columnsOf(ctx, conn, from)
	if err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, c := range fromCols {
		has[c] = true
	}
	var out []string
	for _, c := range target {
		if has[c] {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("copy %s into %s: no column in common", from, table)
	}
	return out, nil
}

// columnsOf lists a table's columns in order.
func columnsOf(ctx context.Context, conn driver.Conn, table string) ([]string, error) {
	var out []string
	err := query(ctx, conn, "describe table "+table, "DESCRIBE TABLE "+table, nil, func(rows driver.Rows) error {
		cols := rows.Columns()
		vals := make([]any, len(cols))
		var name string
		vals[0] = &name
		for i := 1; i < len(cols); i++ {
			var skip string
			vals[i] = &skip
		}
		if err := rows.Scan(vals...); err != nil {
			return err
		}
		out = append(out, name)
		return nil
	})
	return out, err
}

func (s *Store) appliedMigrations(ctx context.Context) (map[int]string, error) {
	out := map[int]string{}
	err := query(ctx, s.conn, "read schema_migrations", "SELECT DISTINCT version, checksum FROM schema_migrations", nil, func(rows driver.Rows) error {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return err
		}
		out[int(v)] = sum
		return nil
	})
	return out, err
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
