package bus

import (
	"context"
	"fmt"
	"reflect"
)

// Route sends the messages of one type to its handler; see Router.
type Route struct {
	msg    reflect.Type
	handle Handler
}

// On routes the messages of type *M to h.
func On[M any](h func(ctx context.Context, m *M) error) Route {
	return Route{msg: reflect.TypeFor[*M](), handle: func(ctx context.Context, d Delivery) error { return h(ctx, any(d.Msg).(*M)) }}
}

// Router is a consumer's handler: each message goes to the route of its
// type. A message of a type with no route is a permanent error (it is
// dead-lettered, naming service and the type): the consumer's spec asked
// for a type its service does not handle.
func Router(service string, routes ...Route) Handler {
	byType := make(map[reflect.Type]Handler, len(routes))
	for _, r := range routes {
		byType[r.msg] = r.handle
	}
	return func(ctx context.Context, d Delivery) error {
		if h, ok := byType[reflect.TypeOf(d.Msg)]; ok {
			return h(ctx, d)
		}
		return Permanent(fmt.Errorf("%s does not handle %T", service, d.Msg))
	}
}
