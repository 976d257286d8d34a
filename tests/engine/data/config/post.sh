#!/bin/sh
echo "$1 $2" > post.args
exit 0
