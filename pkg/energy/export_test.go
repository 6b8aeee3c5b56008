package energy

// SourceOf returns a Source reading m, with no workloads (BasisNone), so
// that the source contract suite runs against the bare meters. It is a
// Checkpointer when m is a RAPLMeter or a ModelMeter. Only the tests read a
// meter without workloads; the collector always attributes.
func SourceOf(m NodeMeter) Source {
	s := meterSource{m: m}
	if mc, ok := m.(meterCheckpointer); ok {
		s.proc = mc.procFS()
	}
	return s
}
