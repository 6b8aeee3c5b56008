package svcmain

import (
	"errors"
	"flag"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"
)

// BindFlags adds a flag for every field of the struct cfg points at that
// is tagged `flag:"name" help:"usage"`, walking into nested structs, with
// the field's current value (its Default) as the flag's default. A
// setting is then declared once, on its field — doc comment, YAML key,
// flag name, help and (in Default) default side by side — and a new one
// needs no second list. Supported field types: string, bool, int, int64,
// float64, time.Duration, and any type whose pointer is a flag.Value. A
// flag that needs more (reading a file, a backquoted name in its help)
// stays in the Service's Flags function.
func BindFlags(fs *flag.FlagSet, cfg any) error {
	_, err := bindFlags(fs, cfg)
	return err
}

// bindFlags is BindFlags, returning also the flag of each YAML key (the
// name Validate errors use), for flagNames.
func bindFlags(fs *flag.FlagSet, cfg any) (map[string]string, error) {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("bind flags: got %T, expected a pointer to a struct", cfg)
	}
	flagOf := map[string]string{}
	return flagOf, bindStruct(fs, v.Elem(), flagOf)
}

var durationType = reflect.TypeFor[time.Duration]()

func bindStruct(fs *flag.FlagSet, v reflect.Value, flagOf map[string]string) error {
	var errs []error
	for i := range v.NumField() {
		sf, f := v.Type().Field(i), v.Field(i)
		name, tagged := sf.Tag.Lookup("flag")
		if !tagged {
			if sf.Type.Kind() == reflect.Struct && sf.IsExported() {
				errs = append(errs, bindStruct(fs, f, flagOf))
			}
			continue
		}
		help := sf.Tag.Get("help")
		if name == "" || help == "" {
			errs = append(errs, fmt.Errorf("bind flags: field %s: got flag %q help %q, expected both", sf.Name, name, help))
			continue
		}
		if key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ","); key != "" && key != "-" {
			if _, dup := flagOf[key]; dup {
				flagOf[key] = "" // two settings of one key: name neither
			} else {
				flagOf[key] = name
			}
		}
		p := f.Addr().Interface()
		switch {
		case sf.Type == durationType:
			fs.DurationVar(p.(*time.Duration), name, f.Interface().(time.Duration), help)
		case sf.Type == reflect.TypeFor[string]():
			fs.StringVar(p.(*string), name, f.String(), help)
		case sf.Type == reflect.TypeFor[bool]():
			fs.BoolVar(p.(*bool), name, f.Bool(), help)
		case sf.Type == reflect.TypeFor[int]():
			fs.IntVar(p.(*int), name, int(f.Int()), help)
		case sf.Type == reflect.TypeFor[int64]():
			fs.Int64Var(p.(*int64), name, f.Int(), help)
		case sf.Type == reflect.TypeFor[float64]():
			fs.Float64Var(p.(*float64), name, f.Float(), help)
		default:
			fv, ok := p.(flag.Value)
			if !ok {
				errs = append(errs, fmt.Errorf("bind flags: field %s (flag %s): got type %s, expected string, bool, int, int64, float64, time.Duration or a flag.Value",
					sf.Name, name, sf.Type))
				continue
			}
			fs.Var(fv, name, help)
		}
	}
	return errors.Join(errs...)
}

// errorField is a Validate error's field: "<section>.<yamlKey>:" at the
// start of a line or after "configure <service>: ".
var errorField = regexp.MustCompile(`(^|: )((?:[A-Za-z0-9_-]+\.)+)([A-Za-z0-9_]+):`)

// flagNames adds the flag that sets a field to each line of err that names
// the field by its YAML path ("scheduler.retries (--retries): got -1, …"),
// so that a user who set it by flag knows which one.
func flagNames(err error, flagOf map[string]string) error {
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	changed := false
	for i, line := range lines {
		lines[i] = errorField.ReplaceAllStringFunc(line, func(m string) string {
			sub := errorField.FindStringSubmatch(m)
			name := flagOf[sub[3]]
			if name == "" {
				return m
			}
			changed = true
			return sub[1] + sub[2] + sub[3] + " (--" + name + "):"
		})
	}
	if !changed {
		return err
	}
	return flagNamed{msg: strings.Join(lines, "\n"), err: err}
}

// flagNamed is an error rendered with flag names; it unwraps to the
// original.
type flagNamed struct {
	msg string
	err error
}

func (e flagNamed) Error() string { return e.msg }
func (e flagNamed) Unwrap() error { return e.err }
