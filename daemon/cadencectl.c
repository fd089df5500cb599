/* Replaced by the control client. */
int main(void) { return 1; }
