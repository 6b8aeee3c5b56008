package processor

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// kgoLogger routes franz-go's logs to zap. franz-go's debug level logs every
// request, so zap's debug maps to its info.
type kgoLogger struct{ l *zap.Logger }

var _ kgo.Logger = kgoLogger{}

func (k kgoLogger) Level() kgo.LogLevel {
	if k.l.Core().Enabled(zapcore.DebugLevel) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var lvl zapcore.Level
	switch level {
	case kgo.LogLevelError:
		lvl = zapcore.ErrorLevel
	case kgo.LogLevelWarn:
		lvl = zapcore.WarnLevel
	case kgo.LogLevelInfo:
		lvl = zapcore.DebugLevel // franz-go's info is chatty (every join, every fetch session)
	default:
		lvl = zapcore.DebugLevel
	}
	ce := k.l.Check(lvl, msg)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, ok := keyvals[i].(string)
		if !ok {
			continue
		}
		fields = append(fields, zap.Any(key, keyvals[i+1]))
	}
	ce.Write(fields...)
}
