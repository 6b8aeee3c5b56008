package dashboards

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Env is what Grafana and the ClickHouse plugin fill a query's macros and
// template variables from: the dashboard's time range, the panel's interval
// and the variables' current values.
type Env struct {
	From, To time.Time
	Interval time.Duration
	Vars     map[string]Var
}

// Var is a template variable's current value: the values selected, or All
// (then Values are every option, as Grafana expands an All without a
// custom all value).
type Var struct {
	Values []string
	All    bool
	Multi  bool
}

// Expand fills sql's macros and variables exactly as Grafana (v10–12) and
// the ClickHouse plugin (v4) do, in their order: the plugin's front end
// resolves $__conditionalAll, Grafana's template service replaces ${var},
// ${var:format} and $var (the plugin formats a multi value as 'a','b' and a
// single one raw), and the plugin's back end expands $__timeFilter(col),
// $__fromTime, $__toTime and $__interval_s. A macro or variable left over,
// or a macro whose expansion ClickHouse 18.16 lacks, is an error.
func Expand(sql string, env Env) (string, error) {
	out, err := conditionalAll(sql, env)
	if err != nil {
		return "", err
	}
	if out, err = replaceVars(out, env); err != nil {
		return "", err
	}
	if out, err = backendMacros(out, env); err != nil {
		return "", err
	}
	if m := leftover.FindString(out); m != "" {
		return "", fmt.Errorf("%q left unexpanded in: %s", m, out)
	}
	return out, nil
}

// unsupported are macros whose expansion ClickHouse 18.16 cannot run
// (toStartOfInterval, DateTime64, fromUnixTimestamp64Milli).
var unsupported = regexp.MustCompile(`\$__(timeInterval|timeInterval_ms|timeGroup|timeFilter_ms|fromTime_ms|toTime_ms|interval_ms)\b`)

// leftover is anything that still looks like a macro or a variable.
var leftover = regexp.MustCompile(`\$\{?\w+|\[\[\w+`)

const conditionalAllMacro = "$__conditionalAll("

// conditionalAll replaces $__conditionalAll(condition, $var) by 1=1 when
// var is All (or empty), else by condition — the plugin's
// applyConditionalAll, innermost (last) first.
func conditionalAll(sql string, env Env) (string, error) {
	for {
		i := strings.LastIndex(sql, conditionalAllMacro)
		if i < 0 {
			return sql, nil
		}
		args, end, err := macroArgs(sql, i+len(conditionalAllMacro)-1)
		if err != nil {
			return "", fmt.Errorf("$__conditionalAll at offset %d: %w", i, err)
		}
		if len(args) != 2 {
			return "", fmt.Errorf("$__conditionalAll at offset %d: %d arguments, expected a condition and a variable", i, len(args))
		}
		name := strings.Trim(strings.TrimSpace(args[1]), "${}")
		v, ok := env.Vars[name]
		if !ok {
			return "", fmt.Errorf("$__conditionalAll at offset %d: variable %q has no value", i, name)
		}
		phrase := args[0]
		if v.All || len(v.Values) == 0 {
			phrase = "1=1"
		}
		sql = sql[:i] + phrase + sql[end:]
	}
}

// macroArgs splits the arguments of the call whose "(" is at open, on
// commas outside parentheses and quotes; end is just past its ")".
func macroArgs(s string, open int) (args []string, end int, err error) {
	depth, start := 0, open+1
	quoted := false
	for i := open; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'' && (i == 0 || s[i-1] != '\\'):
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return append(args, s[start:i]), i + 1, nil
			}
		case c == ',' && depth == 1:
			args = append(args, s[start:i])
			start = i + 1
		}
	}
	return nil, 0, errors.New("no closing parenthesis")
}

// varRef is Grafana's template variable syntax: $var, [[var]] or
// ${var[.field][:format]}.
var varRef = regexp.MustCompile(`\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}`)

func replaceVars(sql string, env Env) (string, error) {
	var errs []error
	out := varRef.ReplaceAllStringFunc(sql, func(m string) string {
		g := varRef.FindStringSubmatch(m)
		name, format := g[1]+g[2]+g[4], g[3]+g[6]
		if strings.HasPrefix(name, "__") {
			return m // a macro, or Grafana's own variable: not a template variable
		}
		v, ok := env.Vars[name]
		if !ok {
			errs = append(errs, fmt.Errorf("variable %q has no value", name))
			return m
		}
		s, err := formatVar(v, format)
		if err != nil {
			errs = append(errs, fmt.Errorf("variable %q: %w", name, err))
			return m
		}
		return s
	})
	return out, errors.Join(errs...)
}

// formatVar formats a variable's value as Grafana's template service does
// for a format, or — without one — as the ClickHouse plugin's format
// function does: a multi value (or All) quoted and comma-separated, a
// single value raw.
func formatVar(v Var, format string) (string, error) {
	multi := v.Multi || v.All
	switch format {
	case "":
		if multi {
			return "'" + strings.Join(v.Values, "','") + "'", nil
		}
		return strings.Join(v.Values, ","), nil
	case "singlequote":
		// Grafana's formatRegistry (singlequote) replaces ' by \' and
		// nothing else; a backslash stays as it is, so a value with \ before
		// a ' becomes \\', which closes the literal. This mirrors Grafana, whose
		// output the tests must run: the dashboards' variables therefore
		// take no custom value (Build), only their queries' options.
		q := make([]string, len(v.Values))
		for i, s := range v.Values {
			q[i] = "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
		}
		return strings.Join(q, ","), nil
	case "raw", "csv":
		return strings.Join(v.Values, ","), nil
	default:
		return "", fmt.Errorf("format %q: expected singlequote, raw or csv", format)
	}
}

// macroCall matches the back-end macros with their argument, if any.
var macroCall = regexp.MustCompile(`\$__(\w+)(?:\(([^)]*)\))?`)

// backendMacros expands the plugin's back-end macros that ClickHouse 18.16
// can run and the dashboards use, as its pkg/macros does (v4):
// toDateTime(<unix s>) and the interval as whole seconds, at least 1.
func backendMacros(sql string, env Env) (string, error) {
	if m := unsupported.FindString(sql); m != "" {
		return "", fmt.Errorf("macro %s expands to SQL ClickHouse 18.16 lacks (toStartOfInterval, DateTime64): bucket with "+
			"toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s) instead", m)
	}
	from, to := env.From.Unix(), env.To.Unix()
	var errs []error
	out := macroCall.ReplaceAllStringFunc(sql, func(m string) string {
		g := macroCall.FindStringSubmatch(m)
		switch g[1] {
		case "timeFilter":
			col := strings.TrimSpace(g[2])
			if col == "" {
				errs = append(errs, errors.New("$__timeFilter needs a column"))
				return m
			}
			return fmt.Sprintf("%s >= toDateTime(%d) AND %s <= toDateTime(%d)", col, from, col, to)
		case "fromTime":
			return fmt.Sprintf("toDateTime(%d)", from) + parenthesised(g[2], m)
		case "toTime":
			return fmt.Sprintf("toDateTime(%d)", to) + parenthesised(g[2], m)
		case "interval_s":
			return fmt.Sprintf("%d", int64(math.Max(env.Interval.Seconds(), 1))) + parenthesised(g[2], m)
		}
		errs = append(errs, fmt.Errorf("macro $__%s: not one Expand implements (the dashboards use $__timeFilter, $__fromTime, $__toTime, "+
			"$__interval_s and $__conditionalAll)", g[1]))
		return m
	})
	return out, errors.Join(errs...)
}

// parenthesised puts back a parenthesised group the macro regexp took
// after an argument-less macro (e.g. "$__interval_s) * 60" never matches
// one, but "$__toTime (x)" would).
func parenthesised(arg, match string) string {
	if strings.HasSuffix(match, ")") {
		return "(" + arg + ")"
	}
	return ""
}

// notPortable are SQL functions and constructs a panel must not use: 18.16
// lacks the first ones (the real server would refuse them in tests too),
// and current ClickHouse refuses the "error-prone window functions"
// without allow_deprecated_error_prone_window_functions, which tests on
// 18.16 cannot see.
var notPortable = regexp.MustCompile(`(?i)\b(toStartOfInterval|toDateTime64|DateTime64|fromUnixTimestamp64\w*|runningDifference\w*|neighbor|runningAccumulate)\s*\(|\bOVER\s*\(`)

// Lint reports SQL that would not run on both ClickHouse 18.16 and current
// releases (see notPortable).
func Lint(sql string) error {
	if m := notPortable.FindString(sql); m != "" {
		return fmt.Errorf("%q does not run on both ClickHouse 18.16 and current releases", strings.TrimSpace(m))
	}
	return orderAfterUnion(sql)
}

var unionOrOrder = regexp.MustCompile(`(?i)^(UNION\s+ALL|ORDER\s+BY)\b`)

// orderAfterUnion refuses an ORDER BY after a UNION ALL in the same
// parentheses: ClickHouse binds it to the last SELECT only, so the rows
// of the others come in any order; the union must be a subquery ordered
// as a whole.
func orderAfterUnion(sql string) error {
	union := []bool{false} // per parenthesis depth: a UNION ALL seen
	quoted := false
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '\'' && (i == 0 || sql[i-1] != '\\'):
			quoted = !quoted
		case quoted:
		case c == '(':
			union = append(union, false)
		case c == ')' && len(union) > 1:
			union = union[:len(union)-1]
		case i == 0 || !isWordByte(sql[i-1]):
			m := unionOrOrder.FindString(sql[i:])
			switch {
			case m == "":
			case strings.EqualFold(m[:5], "UNION"):
				union[len(union)-1] = true
			case union[len(union)-1]:
				return fmt.Errorf("ORDER BY at offset %d follows a UNION ALL and orders only its last SELECT: order the union as a subquery", i)
			}
		}
	}
	return nil
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
