/* Replaced by the daemon entry point. */
int main(void) { return 1; }
