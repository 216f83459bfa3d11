/* Standalone tests of the stk engine: no Python involved.
 * Built and run by tests/test_engine.py; prints "ok N" and exits 0. */
#include "stk.h"

#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #c); exit(1); } } while (0)

/* Every ABI we support wants the stack pointer 16-byte aligned at calls,
 * and stk_swap hands it to the hooks right after its pushes: slice bounds
 * are stack pointers, so they must be aligned too.  (qemu does not fault on
 * a misaligned sp on aarch64, where hardware does: this check does.) */
#define ALIGNED(p) (((uintptr_t)(p) & 15) == 0)

static stk_thread T;
static stk_slice main_slice;
static int checks;

/* --- ping-pong between main and one slice ------------------------------ */
static stk_slice ping;
static volatile int counter;

static void ping_body(void *arg)
{
    volatile char local[200];
    memset((char *)local, 0x5a, sizeof(local));
    CHECK(arg == &counter);
    for (int i = 0; i < 1000; i++) {
        CHECK(counter == 2 * i + 1);
        counter++;
        CHECK(stk_switch(&T, &main_slice) == 0);
        for (size_t k = 0; k < sizeof(local); k++)
            CHECK(local[k] == 0x5a);
    }
    stk_exit(&T, &main_slice);
}

static void test_ping_pong(void)
{
    counter = 1;
    CHECK(stk_start(&T, &ping, ping_body, (void *)&counter) == 0);
    for (int i = 1; i < 1000; i++) {
        CHECK(counter == 2 * i);
        counter++;
        CHECK(ALIGNED(ping.start) && ALIGNED(ping.stop));
        CHECK(stk_switch(&T, &ping) == 0);
    }
    counter++;
    CHECK(stk_switch(&T, &ping) == 0);   /* lets ping_body finish */
    CHECK(ping.state == STK_DEAD);
    CHECK(T.current == &main_slice);
    stk_release(&ping);
    checks++;
}

/* --- many slices at different depths, visited in a scrambled order ----- */
#define N 40
static stk_slice many[N];
static int visits[N];
static int next_of(int i) { return (i * 7 + 3) % N; }

static int recurse_then_loop(int id, int depth, int acc)
{
    volatile int mine[16];
    for (int k = 0; k < 16; k++)
        mine[k] = id * 100 + k + acc;
    if (depth > 0)
        return recurse_then_loop(id, depth - 1, acc + 1) + mine[3] - mine[3];
    for (int round = 0; round < 5; round++) {
        visits[id]++;
        stk_slice *to = (round == 4 && id == 0) ? &main_slice : &many[next_of(id)];
        if (to != &main_slice && to->state != STK_SUSPENDED)
            to = &main_slice;
        CHECK(stk_switch(&T, to) == 0);
        for (int k = 0; k < 16; k++)
            CHECK(mine[k] == id * 100 + k + acc);
    }
    return acc;
}

static void many_body(void *arg)
{
    int id = (int)(long)arg;
    /* each slice sits at its own depth, so the lazy saving sees overlaps
       of every shape */
    int r = recurse_then_loop(id, (id * 13) % 50, 0);
    CHECK(r == (id * 13) % 50);
    stk_exit(&T, &main_slice);
}

static void test_many(void)
{
    for (int i = 0; i < N; i++)
        CHECK(stk_start(&T, &many[i], many_body, (void *)(long)i) == 0);
    /* every slice switched back to main right away (its successor was not
       started yet when it was created, except for the last ones) */
    int alive = N;
    int guard = 0;
    while (alive > 0 && guard++ < 100000) {
        alive = 0;
        for (int i = 0; i < N; i++) {
            if (many[i].state == STK_SUSPENDED) {
                alive++;
                CHECK(ALIGNED(many[i].start) && ALIGNED(many[i].stop));
                CHECK(stk_switch(&T, &many[i]) == 0);
            }
        }
    }
    CHECK(alive == 0);
    for (int i = 0; i < N; i++) {
        CHECK(visits[i] == 5);
        stk_release(&many[i]);
    }
    checks++;
}

/* --- nested starts: a slice starts another slice from deep inside ------ */
static stk_slice outer, inner;
static int nested_log[8], nested_n;

static void inner_body(void *arg)
{
    (void)arg;
    nested_log[nested_n++] = 2;
    CHECK(stk_switch(&T, &outer) == 0);
    nested_log[nested_n++] = 4;
    stk_exit(&T, &main_slice);
}

static int deep_start(int d)
{
    volatile char pad[64];
    pad[0] = (char)d;
    if (d > 0)
        return deep_start(d - 1) + pad[0] - pad[0];
    CHECK(stk_start(&T, &inner, inner_body, NULL) == 0);
    nested_log[nested_n++] = 3;
    CHECK(stk_switch(&T, &inner) == 0);   /* inner exits to main */
    return 0;
}

static void outer_body(void *arg)
{
    (void)arg;
    nested_log[nested_n++] = 1;
    deep_start(20);
    stk_exit(&T, &main_slice);
}

static void test_nested(void)
{
    CHECK(stk_start(&T, &outer, outer_body, NULL) == 0);
    /* inner finished and came back here; outer is still suspended */
    CHECK(inner.state == STK_DEAD);
    CHECK(outer.state == STK_SUSPENDED);
    CHECK(stk_switch(&T, &outer) == 0);
    CHECK(outer.state == STK_DEAD);
    CHECK(nested_n == 4);
    for (int i = 0; i < 4; i++)
        CHECK(nested_log[i] == i + 1);
    stk_release(&outer);
    stk_release(&inner);
    checks++;
}

/* --- floating point control state is per slice ------------------------ */
static stk_slice fp;

static void fp_body(void *arg)
{
    (void)arg;
    CHECK(fegetround() == FE_TONEAREST);
    fesetround(FE_UPWARD);
    CHECK(stk_switch(&T, &main_slice) == 0);
    CHECK(fegetround() == FE_UPWARD);
    fesetround(FE_TONEAREST);
    stk_exit(&T, &main_slice);
}

static void test_fp_control(void)
{
    CHECK(fegetround() == FE_TONEAREST);
    CHECK(stk_start(&T, &fp, fp_body, NULL) == 0);
    CHECK(fegetround() == FE_TONEAREST);      /* the slice's mode stayed there */
    fesetround(FE_DOWNWARD);
    CHECK(stk_switch(&T, &fp) == 0);
    CHECK(fegetround() == FE_DOWNWARD);
    fesetround(FE_TONEAREST);
    stk_release(&fp);
    checks++;
}

/* --- values in callee-saved registers survive a switch ---------------- */
/* Twelve integers and ten doubles live across the switch, each read from
 * its own volatile slot, so the compiler can neither fold nor recompute
 * them: at -O2 it keeps them in every callee-saved register there is
 * (rbx, rbp, r12-r15 on x86-64; x19-x28 and d8-d15 on aarch64) and spills
 * the rest.  The other side holds different values in the same registers,
 * so a register that stk_swap forgets to save shows up as a mismatch. */
static stk_slice regs;
static volatile long iseed[2][12];
static volatile double dseed[2][10];

static __attribute__((noinline)) void hold_across(int side, stk_slice *to)
{
    volatile long *is = iseed[side];
    volatile double *ds = dseed[side];
    long a0 = is[0], a1 = is[1], a2 = is[2], a3 = is[3], a4 = is[4], a5 = is[5];
    long a6 = is[6], a7 = is[7], a8 = is[8], a9 = is[9], a10 = is[10], a11 = is[11];
    double d0 = ds[0], d1 = ds[1], d2 = ds[2], d3 = ds[3], d4 = ds[4];
    double d5 = ds[5], d6 = ds[6], d7 = ds[7], d8 = ds[8], d9 = ds[9];
    CHECK(stk_switch(&T, to) == 0);
    CHECK(a0 == is[0] && a1 == is[1] && a2 == is[2] && a3 == is[3]);
    CHECK(a4 == is[4] && a5 == is[5] && a6 == is[6] && a7 == is[7]);
    CHECK(a8 == is[8] && a9 == is[9] && a10 == is[10] && a11 == is[11]);
    CHECK(d0 == ds[0] && d1 == ds[1] && d2 == ds[2] && d3 == ds[3] && d4 == ds[4]);
    CHECK(d5 == ds[5] && d6 == ds[6] && d7 == ds[7] && d8 == ds[8] && d9 == ds[9]);
}

static void regs_body(void *arg)
{
    (void)arg;
    hold_across(1, &main_slice);
    hold_across(1, &main_slice);
    stk_exit(&T, &main_slice);
}

static void test_callee_saved(void)
{
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < 12; i++)
            iseed[s][i] = (s + 1) * 0x10203040L + i * 0x01010101L;
        for (int i = 0; i < 10; i++)
            dseed[s][i] = (s + 1) * 1000.5 + i * 0.25;
    }
    CHECK(stk_start(&T, &regs, regs_body, NULL) == 0);
    hold_across(0, &regs);          /* regs checks its values and comes back */
    CHECK(regs.state == STK_SUSPENDED);
    CHECK(stk_switch(&T, &regs) == 0);
    CHECK(regs.state == STK_DEAD);
    stk_release(&regs);
    checks++;
}

/* --- stk_locate finds suspended bytes --------------------------------- */
static stk_slice loc, deep;
static volatile int *loc_addr;

static int scribble(int d)
{
    volatile char pad[256];
    memset((char *)pad, d, sizeof(pad));
    return d > 0 ? scribble(d - 1) + pad[1] - pad[1] : 0;
}

static void deep_body(void *arg)
{
    (void)arg;
    scribble(40);               /* overwrites the region loc lives in */
    stk_exit(&T, &main_slice);
}

static void loc_body(void *arg)
{
    (void)arg;
    volatile int marker = 0x12345678;
    loc_addr = &marker;
    CHECK(stk_switch(&T, &main_slice) == 0);
    CHECK(marker == 0x12345678);
    stk_exit(&T, &main_slice);
}

static void test_locate(void)
{
    CHECK(stk_start(&T, &loc, loc_body, NULL) == 0);
    /* the slice's bytes are still in place: locate returns the address */
    CHECK(*(const int *)stk_locate(&loc, (const void *)loc_addr) == 0x12345678);
    /* a slice that goes deep, then back to main, makes loc save itself */
    CHECK(stk_start(&T, &deep, deep_body, NULL) == 0);
    CHECK(deep.state == STK_DEAD);
    CHECK(loc.saved > 0);
    CHECK(*(const int *)stk_locate(&loc, (const void *)loc_addr) == 0x12345678);
    stk_release(&deep);
    CHECK(stk_switch(&T, &loc) == 0);
    stk_release(&loc);
    checks++;
}

/* --- saved bytes kept in memory the owner offers ----------------------- */
static stk_slice sp_one, sa, sc;
static char spare_mem[16384];
static size_t spare_offer;

static void sp_one_body(void *arg)
{
    (void)arg;
    volatile char pad[512];
    memset((char *)pad, 0x77, sizeof(pad));
    stk_offer_spare(&sp_one, spare_mem, spare_offer);
    CHECK(stk_switch(&T, &main_slice) == 0);
    CHECK(sp_one.spare == NULL);        /* the offer ended with the resume */
    for (size_t k = 0; k < sizeof(pad); k++)
        CHECK(pad[k] == 0x77);
    stk_exit(&T, &main_slice);
}

static void sc_body(void *arg)
{
    (void)arg;
    CHECK(stk_switch(&T, &sa) == 0);
    /* sa switched here after saving what lies below our base: a part of
       itself, which fits in its spare memory */
    CHECK(sa.heap == NULL);
    CHECK(sa.saved > 0 && sa.saved < (size_t)(sa.stop - sa.start));
    /* main's base is above all of sa: the rest of sa goes, and what does
       not fit in the spare memory goes to the heap */
    CHECK(stk_switch(&T, &main_slice) == 0);
    stk_exit(&T, &main_slice);
}

static int descend(int d)
{
    volatile char pad[256];
    memset((char *)pad, d, sizeof(pad));
    if (d == 0) {
        char here;
        size_t below_sc = (size_t)(sc.stop - &here) + 512;
        CHECK(below_sc < sizeof(spare_mem));
        stk_offer_spare(&sa, spare_mem, below_sc);
        CHECK(stk_switch(&T, &sc) == 0);
    }
    else {
        descend(d - 1);
    }
    for (size_t k = 0; k < sizeof(pad); k++)
        CHECK(pad[k] == (char)d);
    return d;
}

static void sa_body(void *arg)
{
    (void)arg;
    volatile char top[2048];
    memset((char *)top, 0x33, sizeof(top));
    CHECK(stk_start(&T, &sc, sc_body, NULL) == 0);
    descend(10);
    for (size_t k = 0; k < sizeof(top); k++)
        CHECK(top[k] == 0x33);
    stk_exit(&T, &main_slice);
}

static void test_spare(void)
{
    /* a whole suspended slice in the offered memory: no heap buffer */
    spare_offer = sizeof(spare_mem);
    CHECK(stk_start(&T, &sp_one, sp_one_body, NULL) == 0);
    CHECK(sp_one.heap == NULL && stk_locate(&sp_one, sp_one.start) == spare_mem);
    CHECK(sp_one.saved == (size_t)(sp_one.stop - sp_one.start));
    CHECK(stk_switch(&T, &sp_one) == 0);
    CHECK(sp_one.state == STK_DEAD);

    /* too little memory offered: the first bytes there, the rest on the heap */
    spare_offer = 16;
    CHECK(stk_start(&T, &sp_one, sp_one_body, NULL) == 0);
    CHECK(sp_one.heap != NULL && stk_locate(&sp_one, sp_one.start) == spare_mem);
    CHECK(stk_locate(&sp_one, sp_one.start + 16) == sp_one.heap);
    CHECK(stk_switch(&T, &sp_one) == 0);
    stk_release(&sp_one);

    /* saved in two steps, the second one spilling over to the heap */
    CHECK(stk_start(&T, &sa, sa_body, NULL) == 0);
    CHECK(sa.state == STK_SUSPENDED && sa.heap != NULL);
    CHECK(sa.saved == (size_t)(sa.stop - sa.start));
    size_t split = sa.spare_n & ~(size_t)15;
    CHECK(split > 0 && split < sa.saved);
    CHECK(stk_locate(&sa, sa.start) == spare_mem);
    CHECK(stk_locate(&sa, sa.start + split) == sa.heap);
    /* a structure cut in two by the split reads whole */
    char scratch[32];
    const char *at = sa.start + split - 16;
    const char *got = stk_read(&sa, at, scratch, sizeof(scratch));
    CHECK(got == scratch);
    CHECK(memcmp(scratch, spare_mem + split - 16, 16) == 0);
    CHECK(memcmp(scratch + 16, sa.heap, 16) == 0);
    CHECK(stk_read(&sa, sa.start, scratch, 16) == spare_mem);
    CHECK(stk_switch(&T, &sa) == 0);
    CHECK(sa.state == STK_DEAD);
    CHECK(stk_switch(&T, &sc) == 0);
    CHECK(sc.state == STK_DEAD);
    stk_release(&sa);
    stk_release(&sc);
    checks++;
}

int main(void)
{
    stk_thread_init(&T, &main_slice);
    test_ping_pong();
    test_many();
    test_nested();
    test_fp_control();
    test_callee_saved();
    test_locate();
    test_spare();
    stk_release(&main_slice);
    printf("ok %d\n", checks);
    return 0;
}
