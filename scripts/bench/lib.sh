# Shell helpers shared by scripts/bench.sh and scripts/bench/profile-small.sh (sourced).

# A port nothing listens on, below the ephemeral range (so no client socket holds it).
free_port() {
    local p lo
    lo="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    for _ in $(seq 1 200); do
        p=$((10000 + RANDOM % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Waits until 127.0.0.1:$1 accepts connections while process $2 lives.
wait_port() {
    for _ in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.025
    done
    return 1
}
