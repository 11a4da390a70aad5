/*
 * meltemi_main.c - meltemi's main (runtime/server/main.c) under the name meltemi_main, so
 * that the bench binary's own main (main.c here) can register the C codec first.
 */
#define main meltemi_main
int meltemi_main(int argc, char **argv);
#include "runtime/server/main.c"
