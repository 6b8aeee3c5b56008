package svcmain

import (
	"errors"
	"flag"
	"fmt"
	"reflect"
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
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("bind flags: got %T, expected a pointer to a struct", cfg)
	}
	return bindStruct(fs, v.Elem())
}

var durationType = reflect.TypeFor[time.Duration]()

func bindStruct(fs *flag.FlagSet, v reflect.Value) error {
	var errs []error
	for i := range v.NumField() {
		sf, f := v.Type().Field(i), v.Field(i)
		name, tagged := sf.Tag.Lookup("flag")
		if !tagged {
			if sf.Type.Kind() == reflect.Struct && sf.IsExported() {
				errs = append(errs, bindStruct(fs, f))
			}
			continue
		}
		help := sf.Tag.Get("help")
		if name == "" || help == "" {
			errs = append(errs, fmt.Errorf("bind flags: field %s: got flag %q help %q, expected both", sf.Name, name, help))
			continue
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
