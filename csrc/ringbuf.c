/* placeholder: the ring buffer lands with issue 3 */
typedef int sq_placeholder;
