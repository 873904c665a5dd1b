// LZ4 block compression, one work-item per block of at most BLOCK_SIZE bytes.
//
// Each work-item runs the greedy LZ4 "fast" parse (the same as `lz4 -1`): a 4096-entry
// hash table of 16-bit positions in local memory (its own slice of the work-group's array),
// skip acceleration over incompressible stretches, and the format's end-of-block rules
// (the last 5 bytes are literals, no match starts in the last 12 bytes).
//
// Output goes to the block's own slot dst[gid * BLOCK_SIZE ..]; out_lens[gid] receives the
// compressed length, or 0 when the block would not shrink (the host then stores it raw).
// Giving up as soon as the output could reach the input's size keeps every write inside
// the slot and saves time on incompressible data.
//
// Compile-time parameters (passed as -D by the host): BLOCK_SIZE, WG_SIZE.

#define MINMATCH 4u
#define LASTLITERALS 5u
#define MFLIMIT 12u
#define HASH_LOG 12u
#define HASH_ENTRIES (1u << HASH_LOG)

inline uint read32(__global const uchar *p) {
    return (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
}

inline uint hash4(uint v) { return (v * 2654435761u) >> (32u - HASH_LOG); }

// Bytes a length of `n` takes beyond its 4-bit token field: 0 below 15, then one byte per 255.
inline uint ext_len(uint n) { return n < 15u ? 0u : 1u + (n - 15u) / 255u; }

inline uint write_ext(__global uchar *out, uint op, uint n) {
    if (n >= 15u) {
        n -= 15u;
        while (n >= 255u) {
            out[op++] = 255;
            n -= 255u;
        }
        out[op++] = (uchar)n;
    }
    return op;
}

__kernel void lz4_compress_blocks(__global const uchar *src, __global const ulong *offsets,
                                  __global const uint *lens, __global uchar *dst,
                                  __global uint *out_lens, uint nblocks) {
    __local ushort tables[WG_SIZE * HASH_ENTRIES];
    const uint gid = get_global_id(0);
    if (gid >= nblocks) {
        return;
    }
    __local ushort *table = tables + get_local_id(0) * HASH_ENTRIES;
    __global const uchar *in = src + offsets[gid];
    const uint len = lens[gid];
    __global uchar *out = dst + (ulong)gid * BLOCK_SIZE;

    for (uint i = 0; i < HASH_ENTRIES; i++) {
        table[i] = 0;
    }

    uint anchor = 0;
    uint op = 0;
    if (len > MFLIMIT) {
        const uint mflimit = len - MFLIMIT;         // last position a match may start at
        const uint matchlimit = len - LASTLITERALS; // matches end before this position
        uint ip = 1;
        uint search = 1u << 6;
        table[hash4(read32(in))] = 0;
        while (ip <= mflimit) {
            const uint seq = read32(in + ip);
            const uint h = hash4(seq);
            uint ref = table[h];
            table[h] = (ushort)ip;
            if (ref >= ip || read32(in + ref) != seq) {
                ip += search++ >> 6;
                continue;
            }
            search = 1u << 6;
            while (ip > anchor && ref > 0 && in[ip - 1] == in[ref - 1]) {
                ip--;
                ref--;
            }
            uint ml = MINMATCH;
            while (ip + ml < matchlimit && in[ip + ml] == in[ref + ml]) {
                ml++;
            }
            const uint lit = ip - anchor;
            const uint need = 1u + ext_len(lit) + lit + 2u + ext_len(ml - MINMATCH);
            if (op + need >= len) {
                out_lens[gid] = 0;
                return;
            }
            const uint token_pos = op++;
            op = write_ext(out, op, lit);
            for (uint k = 0; k < lit; k++) {
                out[op++] = in[anchor + k];
            }
            const uint offset = ip - ref;
            out[op++] = (uchar)(offset & 255u);
            out[op++] = (uchar)(offset >> 8);
            op = write_ext(out, op, ml - MINMATCH);
            out[token_pos] = (uchar)((min(lit, 15u) << 4) | min(ml - MINMATCH, 15u));
            ip += ml;
            anchor = ip;
            if (ip <= mflimit) {
                table[hash4(read32(in + ip - 2))] = (ushort)(ip - 2);
            }
        }
    }
    const uint lit = len - anchor;
    if (op + 1u + ext_len(lit) + lit >= len) {
        out_lens[gid] = 0;
        return;
    }
    out[op++] = (uchar)(min(lit, 15u) << 4);
    op = write_ext(out, op, lit);
    for (uint k = 0; k < lit; k++) {
        out[op++] = in[anchor + k];
    }
    out_lens[gid] = op;
}
