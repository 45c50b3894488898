package metrics

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// exposition builds a scrape in Prometheus's text exposition format,
// version 0.0.4: the one every Prometheus and every agent that scrapes it
// reads (https://prometheus.io/docs/instrumenting/exposition_formats/).
type exposition struct{ b []byte }

// family starts a metric family: its help and its type.
func (e *exposition) family(name, typ, help string) {
	e.b = append(e.b, "# HELP "...)
	e.b = append(e.b, name...)
	e.b = append(e.b, ' ')
	e.b = append(e.b, helpEscaper.Replace(help)...)
	e.b = append(e.b, "\n# TYPE "...)
	e.b = append(e.b, name...)
	e.b = append(e.b, ' ')
	e.b = append(e.b, typ...)
	e.b = append(e.b, '\n')
}

// sample writes one sample; labels are label names and values in turn,
// the names in alphabetical order (as Prometheus's own client writes
// them).
func (e *exposition) sample(name string, value float64, labels ...string) {
	e.b = append(e.b, name...)
	e.labels(labels)
	e.b = append(e.b, ' ')
	e.b = appendValue(e.b, value)
	e.b = append(e.b, '\n')
}

func (e *exposition) labels(labels []string) {
	if len(labels) == 0 {
		return
	}
	e.b = append(e.b, '{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, labels[i]...)
		e.b = append(e.b, `="`...)
		e.b = append(e.b, labelEscaper.Replace(labels[i+1])...)
		e.b = append(e.b, '"')
	}
	e.b = append(e.b, '}')
}

// histogram writes h's buckets, sum and count under the labels given.
func (e *exposition) histogram(name string, h *histogram, labels ...string) {
	withLE := append(slices.Clip(labels), "le", "")
	var cumulative uint64
	for i, upper := range h.upper {
		cumulative += h.buckets[i].Load()
		withLE[len(withLE)-1] = strconv.FormatFloat(upper, 'g', -1, 64)
		e.sample(name+"_bucket", float64(cumulative), withLE...)
	}
	cumulative += h.buckets[len(h.upper)].Load()
	withLE[len(withLE)-1] = "+Inf"
	e.sample(name+"_bucket", float64(cumulative), withLE...)
	e.sample(name+"_sum", math.Float64frombits(h.sumBits.Load()), labels...)
	// The count is the +Inf bucket's, read once: the two always agree,
	// even while the loop observes during the scrape.
	e.sample(name+"_count", float64(cumulative), labels...)
}

func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, +1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// histogram counts observations into buckets. One goroutine observes
// (the event loop); scrapes read it from any other.
type histogram struct {
	upper   []float64       // the buckets' upper bounds, ascending
	buckets []atomic.Uint64 // per bucket, not cumulative; the last one is above every bound
	sumBits atomic.Uint64   // the sum of observations, as float64 bits
}

// newHistogram has count buckets, the first up to start and each next
// one factor times wider.
func newHistogram(start, factor float64, count int) *histogram {
	h := &histogram{upper: make([]float64, count), buckets: make([]atomic.Uint64, count+1)}
	for i := range h.upper {
		h.upper[i] = start
		start *= factor
	}
	return h
}

// observe counts v; only one goroutine may call it.
func (h *histogram) observe(v float64) {
	i := 0
	for i < len(h.upper) && v > h.upper[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumBits.Store(math.Float64bits(math.Float64frombits(h.sumBits.Load()) + v))
}

func (h *histogram) count() uint64 {
	var n uint64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}
