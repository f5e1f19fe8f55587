#!/usr/bin/env python3
"""Derives the carry-less-multiply folding constants in Sources/CFaultToleranceShims/crc32c.c
and checks the folding algorithm written there against a bitwise CRC32C on random inputs.

Folding a 128-bit remainder x forward by D bits, in the bit-reflected domain of the CRC32C
instruction, is clmul(lo(x), k_lo(D)) xor clmul(hi(x), k_hi(D)) with
k_lo(D) = reflect32(x^(D+31) mod P) and k_hi(D) = reflect32(x^(D-33) mod P).
Run: python3 scripts/crc32c_fold_constants.py
"""
import random

REFLECTED = 0x82F63B78
P = (1 << 32) | 0x1EDC6F41


def crc32c(data, crc=0xFFFFFFFF):
    """The CRC32C register after `data` (no final inversion), bit by bit."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (REFLECTED if crc & 1 else 0)
    return crc


def crc32_u64(crc, word):
    """What the CRC32C instruction does with 8 little-endian bytes."""
    return crc32c(word.to_bytes(8, "little"), crc)


def clmul(a, b):
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        b >>= 1
    return result


def x_power_mod_p(exponent):
    result = 1
    for _ in range(exponent):
        result <<= 1
        if result >> 32:
            result ^= P
    return result


def reflect32(value):
    return int(f"{value:032b}"[::-1], 2)


def k_lo(distance):
    return reflect32(x_power_mod_p(distance + 31))


def k_hi(distance):
    return reflect32(x_power_mod_p(distance - 33))


def fold(x, distance):
    return clmul(x & (2**64 - 1), k_lo(distance)) ^ clmul(x >> 64, k_hi(distance))


def folded_crc(data, crc, registers):
    """The folding algorithms of crc32c.c (four 512-bit registers, folded 2,048 bits a step)
    and digest.c (two registers, 1,024 bits), for `registers` of four 128-bit lanes each."""
    lanes_count = 4 * registers
    step = 16 * lanes_count
    lanes = [int.from_bytes(data[16 * i : 16 * i + 16], "little") for i in range(lanes_count)]
    lanes[0] ^= crc
    offset = step
    while len(data) - offset >= step:
        for i in range(lanes_count):
            block = int.from_bytes(data[offset + 16 * i : offset + 16 * i + 16], "little")
            lanes[i] = fold(lanes[i], 8 * step) ^ block
        offset += step
    for register in range(registers - 1):
        for lane in range(4):
            lanes[4 * (register + 1) + lane] ^= fold(lanes[4 * register + lane], 512)
    last = 4 * (registers - 1)
    x = lanes[last + 3] ^ fold(lanes[last], 384) ^ fold(lanes[last + 1], 256) ^ fold(lanes[last + 2], 128)
    while len(data) - offset >= 16:
        x = fold(x, 128) ^ int.from_bytes(data[offset : offset + 16], "little")
        offset += 16
    register = crc32_u64(crc32_u64(0, x & (2**64 - 1)), x >> 64)
    return crc32c(data[offset:], register)


if __name__ == "__main__":
    generator = random.Random(1)
    for length in [256, 257, 271, 300, 511, 512, 600, 1000, 4096, 5000]:
        data = bytes(generator.randrange(256) for _ in range(length))
        for start in [0xFFFFFFFF, 0x12345678]:
            for registers in [4, 2]:
                assert folded_crc(data, start, registers) == crc32c(data, start), (length, registers)
    for distance in [2048, 1024, 512, 384, 256, 128]:
        print(f"D = {distance:4}: k_lo 0x{k_lo(distance):08x}, k_hi 0x{k_hi(distance):08x}")
    print("folding matches the bitwise CRC32C")
