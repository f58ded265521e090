package bridge

import (
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Compression (docs/protocol.md, "Compression").
//
// An event stream is one gzip member (RFC 1952) holding one deflate stream
// (RFC 1951), and each batch that sseOut writes is a run of deflate blocks
// of its own: compressed by a compressor borrowed from a pool and Reset
// first, so that it refers to nothing before the batch, and ended with a
// sync flush (an empty stored block), so that the browser inflates the
// whole batch as soon as it arrives. A stream then keeps only the gzip
// trailer's running CRC-32 and length between writes: no compressor, no
// window. The price is the ratio: a batch cannot refer to the events of
// earlier batches (docs/benchmarks.md, "Compression", has the numbers).
//
// Separate gzip members per batch would need no state at all, but browsers
// stop at the end of the first member: Chromium's GzipSourceStream
// discards whatever follows the first member's trailer, "matching the
// behavior of other browsers".

// CompressionOptions turn on the compression of a method's responses, per
// transport. Proto files declare them with the (bridge.v1.method) option's
// compression field; [WithCompression] overrides them. The zero value
// compresses nothing.
type CompressionOptions struct {
	// SSE gzips event streams (Content-Encoding: gzip) when the request's
	// Accept-Encoding allows it, with every write flushed, so that no event
	// is held back.
	SSE bool
	// WebSocket negotiates permessage-deflate (RFC 7692, with no context
	// takeover in either direction) when the client offers it. Messages
	// shorter than 128 bytes go uncompressed.
	WebSocket bool
	// JSON gzips unary JSON answers larger than 1 KiB when the request's
	// Accept-Encoding allows it.
	JSON bool
}

// WithCompression overrides the compression options of one method, named
// "pkg.Service/Method", over those its proto file declares.
func WithCompression(method string, opts CompressionOptions) Option {
	return optionFunc(func(c *config) {
		if c.compressOverrides == nil {
			c.compressOverrides = make(map[string]CompressionOptions)
		}
		c.compressOverrides[method] = opts
	})
}

const headerContentEncoding = "Content-Encoding"

// Thresholds below which compression costs more than it saves.
const (
	// compressMinJSON: a unary answer this long or shorter goes as is.
	compressMinJSON = 1 << 10
	// compressMinWS: a WebSocket message shorter than this goes as is.
	compressMinWS = 128
)

// compressLevel is the deflate level of every transport. BestSpeed's
// compressor resets in constant time, which a compressor Reset for every
// batch needs (the higher levels clear a 512 KiB hash table on Reset), and
// it is gorilla/websocket's default too.
const compressLevel = flate.BestSpeed

// flateWriters lends compressors to writes only while they compress: an
// idle stream, or one whose write is blocked on a slow browser, holds
// none.
var flateWriters = sync.Pool{New: func() any {
	fw, _ := flate.NewWriter(nil, compressLevel) // the level is valid
	return fw
}}

// appendWriter is an io.Writer that appends to its slice.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// deflateMinBytes: a batch shorter than this goes as a stored block, with
// no compressor at all. BestSpeed would only Huffman-code it, which gains
// nothing on text this short (BenchmarkSSEGzip), at the cost of a few
// microseconds per batch.
const deflateMinBytes = 128

// appendDeflate appends src to dst as deflate blocks that refer to nothing
// before them, ended byte-aligned and not final, so that such runs
// concatenate into one deflate stream: a stored block for a short src,
// otherwise a compressor's blocks and its sync flush.
func appendDeflate(dst, src []byte) []byte {
	if len(src) < deflateMinBytes {
		// RFC 1951 section 3.2.4: BFINAL 0, BTYPE 00, padded to the byte
		// (the run before ended on one), LEN and its complement NLEN;
		// then the empty stored block of a sync flush, without which some
		// decoders (Go's) keep the block's bytes until the next block.
		n := uint16(len(src))
		dst = append(dst, 0x00)
		dst = binary.LittleEndian.AppendUint16(dst, n)
		dst = binary.LittleEndian.AppendUint16(dst, ^n)
		dst = append(dst, src...)
		return append(dst, syncFlush...)
	}
	fw := flateWriters.Get().(*flate.Writer)
	aw := &appendWriter{b: dst}
	fw.Reset(aw)
	// Writes to an appendWriter do not fail.
	_, _ = fw.Write(src)
	_ = fw.Flush()
	fw.Reset(nil) // lets go of dst
	flateWriters.Put(fw)
	return aw.b
}

// syncFlush is the empty stored block that ends a sync flush.
const syncFlush = "\x00\x00\x00\xff\xff"

// gzipHeader starts a gzip member: no name, no time, unknown OS (RFC 1952
// section 2.3).
const gzipHeader = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

// appendGzipTrailer ends a gzip member whose deflate stream so far ends in
// a sync flush: a final empty block (fixed Huffman codes, end of block),
// then the CRC-32 and length of what was compressed.
func appendGzipTrailer(dst []byte, crc, size uint32) []byte {
	dst = append(dst, 0x03, 0x00)
	dst = binary.LittleEndian.AppendUint32(dst, crc)
	return binary.LittleEndian.AppendUint32(dst, size)
}

// appendGzip appends src to dst as one whole gzip member.
func appendGzip(dst, src []byte) []byte {
	dst = append(dst, gzipHeader...)
	dst = appendDeflate(dst, src)
	return appendGzipTrailer(dst, crc32.ChecksumIEEE(src), uint32(len(src)))
}

// acceptsGzip reports whether a request's Accept-Encoding admits gzip
// (RFC 9110 section 12.5.3): named with a q-value above zero, or covered
// by "*" and not refused by name.
func acceptsGzip(h http.Header) bool {
	gzip, star := -1.0, -1.0
	for _, v := range h.Values(headerAcceptEncoding) {
		for _, item := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(item, ";")
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					} else {
						q = 0 // an unreadable weight refuses rather than guesses
					}
				}
			}
			switch coding = strings.TrimSpace(coding); {
			case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
				gzip = max(gzip, q)
			case coding == "*":
				star = max(star, q)
			}
		}
	}
	if gzip >= 0 {
		return gzip > 0
	}
	return star > 0
}

// addVary adds name to hdr's Vary unless it is there already.
func addVary(hdr http.Header, name string) {
	for _, v := range hdr.Values(headerVary) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return
			}
		}
	}
	hdr.Add(headerVary, name)
}

// compress makes the event stream of m gzip its bytes when the method opts
// in and r accepts gzip. Called once the wire is chosen (after hijack),
// before anything is written.
func (o *sseOut) compress(r *http.Request, m *method) {
	if !m.compress.SSE {
		return
	}
	var hdr http.Header
	switch w := o.wire.(type) {
	case *responseWire:
		hdr = w.w.Header()
	case *takeover:
		hdr = w.hdr
	default:
		return
	}
	// Whether or not this response is compressed, another request's may
	// be: caches must key on Accept-Encoding.
	addVary(hdr, headerAcceptEncoding)
	if acceptsGzip(r.Header) {
		o.wire = &gzipWire{sseWire: o.wire, hdr: hdr, timeout: o.h.cfg.writeTimeout}
	}
}

// gzipWire gzips an event stream on its way to the wire (see the top of
// the file). Its fields are used as the sseWire's are: under sseOut's lock
// before the first write, then by one writer at a time.
type gzipWire struct {
	sseWire
	hdr     http.Header // the response's, until commit or answer
	timeout time.Duration
	// head is how many bytes at the start of the next write go out as
	// they are: the response head of a connection taken over, which
	// commit puts before the stream's first bytes.
	head    int
	stream  bool // committed: the body is gzip
	started bool // the gzip header is written
	failed  bool // a write failed: no trailer
	crc     uint32
	size    uint32
}

func (g *gzipWire) commit(dst []byte) []byte {
	g.hdr.Set(headerContentEncoding, "gzip")
	g.hdr = nil
	g.stream = true
	dst = g.sseWire.commit(dst)
	g.head = len(dst)
	return dst
}

func (g *gzipWire) answer(dst []byte, respond func(http.ResponseWriter)) []byte {
	g.hdr = nil // an answer instead of a stream goes as is
	return g.sseWire.answer(dst, respond)
}

func (g *gzipWire) write(b []byte, deadline time.Time) error {
	if !g.stream {
		return g.sseWire.write(b, deadline)
	}
	out := getSSEBuf()
	defer func() { putSSEBuf(out) }()
	head := min(g.head, len(b))
	out = append(out, b[:head]...)
	b, g.head = b[head:], g.head-head
	if !g.started {
		out = append(out, gzipHeader...)
		g.started = true
	}
	if len(b) > 0 {
		out = appendDeflate(out, b)
		g.crc = crc32.Update(g.crc, crc32.IEEETable, b)
		g.size += uint32(len(b)) // ISIZE is the length modulo 2^32
	}
	err := g.sseWire.write(out, deadline)
	if err != nil {
		g.failed = true
	}
	return err
}

// close ends the gzip member, so that the browser's decoder sees a whole
// stream, and then the response.
func (g *gzipWire) close() {
	if g.started && !g.failed {
		var buf [10]byte
		_ = g.sseWire.write(appendGzipTrailer(buf[:0], g.crc, g.size), time.Now().Add(g.timeout))
	}
	g.sseWire.close()
}

// compressJSON returns the body of a unary answer of m to r: gzipped, with
// hdr's Content-Encoding set and gzipped true, when the method opts in, the
// request accepts gzip and body is long enough to gain; otherwise body
// itself. A gzipped body is the pool's, to put back after the write.
func compressJSON(r *http.Request, m *method, hdr http.Header, body []byte) (out []byte, gzipped bool) {
	if !m.compress.JSON || len(body) <= compressMinJSON || !acceptsGzip(r.Header) {
		return body, false
	}
	hdr.Set(headerContentEncoding, "gzip")
	return appendGzip(getSSEBuf(), body), true
}
