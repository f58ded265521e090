package bridge

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"testing"
)

func TestAcceptsGzip(t *testing.T) {
	for _, c := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"deflate, gzip;q=0.5, br"}, true},
		{[]string{"br", "gzip"}, true},
		{[]string{"br"}, false},
		{[]string{"identity"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip ; q=0.000"}, false},
		{[]string{"gzip;q=0, *"}, false},  // refused by name: * does not bring it back
		{[]string{"*;q=0, gzip"}, true},   // named wins over *
		{[]string{"gzip;q=oops"}, false},  // an unreadable weight refuses
		{[]string{"gzip;level=9"}, true},  // other parameters are ignored
		{[]string{"gzipx, xgzip"}, false}, // whole tokens only
	} {
		h := http.Header{"Accept-Encoding": c.header}
		if got := acceptsGzip(h); got != c.want {
			t.Errorf("Accept-Encoding %q: acceptsGzip %v, want %v", c.header, got, c.want)
		}
	}
}

// tickEvents returns n events like the demo ticker's.
func tickEvents(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		seq := strconv.Itoa(i + 1)
		data := fmt.Sprintf(`{"symbol":"ACME","seq":"%s","price":%d.%02d,"time":"2026-12-01T23:%02d:%02d.%03dZ"}`, seq, 100+i%17, i*7%100, i/60%60, i%60, i*37%1000)
		out[i] = appendEvent(nil, seq, "message", []byte(data))
	}
	return out
}

// TestDeflateRunsConcatenate: runs of appendDeflate, each compressed with
// no memory of the ones before, concatenate with a gzip header and
// trailer into one gzip member that Go's reader inflates whole, checking
// the CRC-32 and length, and that inflates each run as soon as its bytes
// are there (a reader fed the stream run by run gets every run's events
// before the next run's bytes exist).
func TestDeflateRunsConcatenate(t *testing.T) {
	events := tickEvents(50)
	var stream bytes.Buffer
	var crc, size uint32
	stream.WriteString(gzipHeader)
	pr, pw := io.Pipe()
	zr := make(chan *gzip.Reader, 1)
	go func() {
		r, err := gzip.NewReader(pr)
		if err != nil {
			t.Error(err)
		}
		zr <- r
	}()
	_, _ = pw.Write([]byte(gzipHeader))
	r := <-zr
	for i, ev := range events {
		run := appendDeflate(nil, ev)
		stream.Write(run)
		crc = crc32.Update(crc, crc32.IEEETable, ev)
		size += uint32(len(ev))
		go func() { _, _ = pw.Write(run) }()
		got := make([]byte, len(ev))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, ev) {
			t.Fatalf("run %d inflated to %q, %v; want %q", i, got, err, ev)
		}
	}
	_ = pw.Close()
	whole := appendGzipTrailer(stream.Bytes(), crc, size)
	r2, err := gzip.NewReader(bytes.NewReader(whole))
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(r2)
	if err != nil {
		t.Fatalf("inflate the whole member: %v", err)
	}
	if want := bytes.Join(events, nil); !bytes.Equal(all, want) {
		t.Fatalf("inflated %d bytes, want %d", len(all), len(want))
	}
	// appendGzip is the same member in one go.
	if r3, err := gzip.NewReader(bytes.NewReader(appendGzip(nil, all))); err != nil {
		t.Fatal(err)
	} else if again, err := io.ReadAll(r3); err != nil || !bytes.Equal(again, all) {
		t.Fatalf("appendGzip: %v", err)
	}
}

// BenchmarkSSEGzip compares the bridge's way of gzipping an event stream
// (each batch deflated by a pooled compressor Reset first: no memory kept
// between batches) with a compressor kept per stream and flushed per
// batch (the better ratio, at the price of the compressor's memory for
// every stream, idle or not), for three shapes of batch, and reports the
// bytes on the wire per batch. BenchmarkFlateWriter is that memory.
func BenchmarkSSEGzip(b *testing.B) {
	for _, shape := range []struct {
		name    string
		batches [][]byte
	}{
		{"tick", tickEvents(1000)},        // one ticker event per batch
		{"32ticks", tickBatches(100, 32)}, // a busy stream: 32 events per write
		{"bigevent", bigEvents(100, 20)},  // one event of 20 ticks' JSON
	} {
		b.Run(shape.name, func(b *testing.B) { benchmarkSSEGzip(b, shape.batches) })
	}
}

// tickBatches returns n batches of per ticker events each.
func tickBatches(n, per int) [][]byte {
	ticks := tickEvents(n * per)
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Join(ticks[i*per:(i+1)*per], nil)
	}
	return out
}

// bigEvents returns n events whose data is a JSON array of per ticks.
func bigEvents(n, per int) [][]byte {
	ticks := tickEvents(n * per)
	out := make([][]byte, n)
	for i := range out {
		data := []byte("[")
		for j, ev := range ticks[i*per : (i+1)*per] {
			if j > 0 {
				data = append(data, ',')
			}
			_, json, _ := bytes.Cut(ev, []byte("data: "))
			data = append(data, bytes.TrimSpace(json)...)
		}
		out[i] = appendEvent(nil, strconv.Itoa(i+1), "message", append(data, ']'))
	}
	return out
}

func benchmarkSSEGzip(b *testing.B, events [][]byte) {
	var plain int
	for _, ev := range events {
		plain += len(ev)
	}
	b.Run("per-batch", func(b *testing.B) {
		var out int
		for b.Loop() {
			buf := getSSEBuf()
			for _, ev := range events {
				buf = appendDeflate(buf[:0], ev)
			}
			putSSEBuf(buf)
		}
		for _, ev := range events {
			out += len(appendDeflate(nil, ev))
		}
		b.ReportMetric(float64(plain)/float64(len(events)), "plain-B/batch")
		b.ReportMetric(float64(out)/float64(len(events)), "wire-B/batch")
	})
	for _, level := range []int{flate.BestSpeed, flate.DefaultCompression} {
		b.Run("persistent-level-"+strconv.Itoa(level), func(b *testing.B) {
			var w appendWriter
			fw, _ := flate.NewWriter(&w, level)
			for b.Loop() {
				w.b = w.b[:0]
				fw.Reset(&w)
				for _, ev := range events {
					_, _ = fw.Write(ev)
					_ = fw.Flush()
				}
			}
			b.ReportMetric(float64(plain)/float64(len(events)), "plain-B/batch")
			b.ReportMetric(float64(len(w.b))/float64(len(events)), "wire-B/batch")
		})
	}
}

// BenchmarkFlateWriter reports (as B/op) the memory of one compressor:
// what a stream would keep if it held one.
func BenchmarkFlateWriter(b *testing.B) {
	for _, level := range []int{flate.BestSpeed, flate.DefaultCompression} {
		b.Run("level-"+strconv.Itoa(level), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = flate.NewWriter(io.Discard, level)
			}
		})
	}
}
