package spec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed 5-field cron schedule (minute hour day-of-month month
// day-of-week), evaluated in UTC. Fields take *, N, A-B, lists and /step.
// As in Vixie cron, when both day fields are restricted a day matching
// either one fires.
type Cron struct {
	min, hour, dom, month, dow uint64 // bit sets
	domStar, dowStar           bool
	text                       string
}

// ParseCron parses a cron expression.
func ParseCron(expr string) (*Cron, error) {
	f := strings.Fields(expr)
	if len(f) != 5 {
		return nil, fmt.Errorf("cron %q: expected 5 fields (minute hour day-of-month month day-of-week)", expr)
	}
	c := &Cron{text: expr, domStar: f[2] == "*", dowStar: f[4] == "*"}
	specs := []struct {
		name     string
		lo, hi   int
		dst      *uint64
		field    string
		sundayIs bool
	}{
		{"minute", 0, 59, &c.min, f[0], false},
		{"hour", 0, 23, &c.hour, f[1], false},
		{"day-of-month", 1, 31, &c.dom, f[2], false},
		{"month", 1, 12, &c.month, f[3], false},
		{"day-of-week", 0, 7, &c.dow, f[4], true},
	}
	for _, sp := range specs {
		bits, err := parseCronField(sp.field, sp.lo, sp.hi)
		if err != nil {
			return nil, fmt.Errorf("cron %q: %s field: %w", expr, sp.name, err)
		}
		if sp.sundayIs && bits&(1<<7) != 0 {
			bits |= 1 // 7 is Sunday too
		}
		*sp.dst = bits
	}
	return c, nil
}

func parseCronField(field string, lo, hi int) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(field, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 || n > hi-lo+1 {
				// A larger step would overflow the loop below and set
				// values that were never asked for.
				return 0, fmt.Errorf("step %q: expected a number from 1 to %d", stepText, hi-lo+1)
			}
			step = n
		}
		a, b := lo, hi
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			x, y, _ := strings.Cut(rng, "-")
			var err1, err2 error
			a, err1 = strconv.Atoi(x)
			b, err2 = strconv.Atoi(y)
			if err1 != nil || err2 != nil || a > b {
				return 0, fmt.Errorf("range %q: expected A-B with A <= B", rng)
			}
		default:
			n, err := strconv.Atoi(rng)
			if err != nil {
				return 0, fmt.Errorf("%q: expected a number, *, a range or a list", rng)
			}
			a, b = n, n
			if hasStep {
				b = hi
			}
		}
		if a < lo || b > hi {
			return 0, fmt.Errorf("%q: values must be within %d-%d", part, lo, hi)
		}
		for v := a; v <= b; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

// Next returns the first minute strictly after t at which the schedule fires.
func (c *Cron) Next(t time.Time) time.Time {
	t = t.UTC().Truncate(time.Minute).Add(time.Minute)
	limit := t.Add(5 * 366 * 24 * time.Hour)
	for t.Before(limit) {
		if c.month&(1<<uint(t.Month())) == 0 {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !c.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if c.hour&(1<<uint(t.Hour())) == 0 {
			t = t.Truncate(time.Hour).Add(time.Hour)
			continue
		}
		if c.min&(1<<uint(t.Minute())) == 0 {
			t = t.Add(time.Minute)
			continue
		}
		return t
	}
	return time.Time{} // never (e.g. 30 February)
}

func (c *Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dow
	case c.dowStar:
		return dom
	}
	return dom || dow
}

// String is the expression.
func (c *Cron) String() string { return c.text }
