/* aioloop-nbd: placeholder until the daemon lands. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "aioloop-nbd: not built yet\n");
    return 1;
}
